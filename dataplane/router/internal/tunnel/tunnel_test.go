package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	// The client side of these tests is trc's own multiplexer: go-yamux v1.2.4.
	yamux "github.com/libp2p/go-yamux"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHandshakeFullReads(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHandshake(&b, "1234:s3cr3t"); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", b.Bytes()); got != "1111000b313233343a733363723374" {
		t.Fatalf("wire bytes %s differ from trc's", got)
	}
	s, err := ReadHandshake(iotest.OneByteReader(&b), 64)
	if err != nil || s != "1234:s3cr3t" {
		t.Fatalf("got %q, %v", s, err)
	}
}

func TestHandshakeRejects(t *testing.T) {
	var he *HandshakeError
	// bad magic is refused after 4 bytes, before any secret is read
	r := &countingReader{r: bytes.NewReader([]byte{0x22, 0x22, 0, 3, 'a', 'b', 'c'})}
	if _, err := ReadHandshake(r, 64); !errors.As(err, &he) || r.n != 4 {
		t.Fatalf("bad magic: %v after %d bytes", err, r.n)
	}
	if _, err := ReadHandshake(bytes.NewReader([]byte{0x11, 0x11, 0x10, 0}), 64); !errors.As(err, &he) {
		t.Fatalf("oversized secret: %v", err)
	}
	if _, err := ReadHandshake(bytes.NewReader([]byte{0x11, 0x11, 0, 0}), 64); !errors.As(err, &he) {
		t.Fatalf("empty secret: %v", err)
	}
	if _, err := ReadHandshake(bytes.NewReader([]byte{0x11, 0x11, 0, 5, 'a'}), 64); !errors.As(err, &he) {
		t.Fatalf("short secret: %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// pair returns a registered-style server session and the client session that acknowledges
// and echoes every stream it is offered (stall=true: it accepts nothing).
func pair(t *testing.T, stall bool) (*Mux, *yamux.Session) {
	t.Helper()
	a, b := net.Pipe()
	srv, err := NewRegistry(testLimits).NewMux(a, MuxConfig(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	cliCfg := yamux.DefaultConfig()
	cliCfg.LogOutput = io.Discard
	cli, err := yamux.Client(b, cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !stall {
		go func() {
			for {
				st, err := cli.AcceptStream()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(st, st); _ = st.Close() }()
			}
		}()
	}
	t.Cleanup(func() { _ = cli.Close(); _ = srv.Close() })
	return srv, cli
}

var testLimits = Limits{MaxTunnels: 1000, MaxStreamsPerTunnel: 4, TunnelMemory: 64 << 20, MaxStreams: 6, OpenTimeout: 200 * time.Millisecond}

func TestRegistryReplaceAndRemove(t *testing.T) {
	r := NewRegistry(testLimits)
	s1, c1 := pair(t, false)
	s2, _ := pair(t, false)
	if _, err := r.Register("u:a", s1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register("u:a", s2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "old session closed on replacement", s1.IsClosed)
	waitFor(t, "client of old session sees the close", c1.IsClosed)
	if cur, _ := r.Get("u:a"); cur == nil || cur.mux != s2 || r.Len() != 1 {
		t.Fatal("replacement not registered")
	}
	// the old session's death must not remove the new registration
	_ = s2.Close()
	waitFor(t, "dead session removed", func() bool { return r.Len() == 0 })
	if _, err := r.Open("u:a"); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("open on removed tunnel: %v", err)
	}
}

func TestRegistryRemovesOnClientEOF(t *testing.T) {
	r := NewRegistry(testLimits)
	s, c := pair(t, false)
	if _, err := r.Register("x", s); err != nil {
		t.Fatal(err)
	}
	_ = c.Close() // the trc process dies
	waitFor(t, "session removed after EOF", func() bool { return r.Len() == 0 })
}

func TestRegistryStreamLimits(t *testing.T) {
	r := NewRegistry(testLimits)
	s, _ := pair(t, false)
	s2, _ := pair(t, false)
	if _, err := r.Register("a", s); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register("b", s2); err != nil {
		t.Fatal(err)
	}
	var open []*Stream
	for range 4 {
		st, err := r.Open("a")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	if _, err := r.Open("a"); !errors.Is(err, ErrTunnelBusy) {
		t.Fatalf("5th stream on one tunnel: %v, want ErrTunnelBusy", err)
	}
	for range 2 {
		st, err := r.Open("b")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	if _, err := r.Open("b"); !errors.Is(err, ErrGlobalBusy) {
		t.Fatalf("7th stream overall: %v, want ErrGlobalBusy", err)
	}
	// backpressure: a waiting Open succeeds as soon as a slot frees
	done := make(chan error, 1)
	go func() {
		st, err := r.Open("b")
		if err == nil {
			_ = st.Close()
		}
		done <- err
	}()
	_ = open[0].Close()
	_ = open[0].Close() // double close releases once
	if err := <-done; err != nil {
		t.Fatalf("waiting open: %v", err)
	}
	for _, st := range open[1:] {
		_ = st.Close()
	}
	if len(r.global) != 0 {
		t.Fatalf("global slots leaked: %d", len(r.global))
	}
}

func TestRegistryMaxTunnels(t *testing.T) {
	r := NewRegistry(Limits{MaxTunnels: 1, MaxStreamsPerTunnel: 1, TunnelMemory: 64 << 20, MaxStreams: 1, OpenTimeout: time.Second})
	s1, _ := pair(t, false)
	s2, _ := pair(t, false)
	s3, _ := pair(t, false)
	if _, err := r.Register("a", s1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register("b", s2); !errors.Is(err, ErrTooManyTunnels) {
		t.Fatalf("second secret: %v", err)
	}
	if _, err := r.Register("a", s3); err != nil {
		t.Fatalf("replacing an existing secret must work at the limit: %v", err)
	}
}

func TestRegistryOpenTimeoutOnStalledClient(t *testing.T) {
	r := NewRegistry(testLimits)
	s, _ := pair(t, true)
	if _, err := r.Register("a", s); err != nil {
		t.Fatal(err)
	}
	// yamux OpenStream does not wait for the ACK, so opening succeeds; the write of the
	// replayed bytes is what a caller bounds with a deadline.
	st, err := r.Open("a")
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = st.Write(make([]byte, 512*1024))
	_ = st.Close()
}

// Many goroutines register, replace, kill and open streams at once; run with -race.
func TestRegistryConcurrency(t *testing.T) {
	r := NewRegistry(Limits{MaxTunnels: 1000, MaxStreamsPerTunnel: 64, TunnelMemory: 64 << 20, MaxStreams: 1024, OpenTimeout: time.Second})
	var wg sync.WaitGroup
	secrets := []string{"s0", "s1", "s2", "s3"}
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				secret := secrets[(w+i)%len(secrets)]
				switch i % 4 {
				case 0, 1:
					s, c := pair(t, false)
					if _, err := r.Register(secret, s); err != nil {
						t.Error(err)
					}
					if i%4 == 1 {
						_ = c.Close()
					}
				default:
					st, err := r.Open(secret)
					if err != nil {
						continue // the tunnel may just have been replaced or died
					}
					msg := []byte("ping")
					_ = st.SetDeadline(time.Now().Add(2 * time.Second))
					if _, err := st.Write(msg); err == nil {
						buf := make([]byte, 4)
						_, _ = io.ReadFull(st, buf)
					}
					_ = st.Close()
				}
			}
		}()
	}
	wg.Wait()
	r.CloseAll()
	waitFor(t, "all sessions removed", func() bool { return r.Len() == 0 })
	waitFor(t, "all slots free", func() bool { return len(r.global) == 0 })
}

func TestAcceptorHandshake(t *testing.T) {
	r := NewRegistry(testLimits)
	acc := &Acceptor{Registry: r, HandshakeTimeout: 300 * time.Millisecond, MaxSecret: 64, Log: slog.New(slog.DiscardHandler)}
	// a client that connects and says nothing is dropped after the handshake timeout
	a, b := net.Pipe()
	start := time.Now()
	acc.Handle(a)
	if time.Since(start) > 5*time.Second {
		t.Fatal("handshake timeout not applied")
	}
	if _, err := b.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent client not disconnected")
	}
	// a proper client registers
	a, b = net.Pipe()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	go func() {
		cli, err := yamux.Client(b, cfg)
		if err != nil {
			return
		}
		st, err := cli.OpenStream()
		if err != nil {
			return
		}
		_ = WriteHandshake(st, "1234:abc")
		_ = st.Close()
		<-cli.CloseChan()
	}()
	acc.Handle(a)
	if _, ok := r.Get("1234:abc"); !ok {
		t.Fatal("client not registered")
	}
}

// A client that registers and then stops answering (frozen process, dead link without a
// FIN) fails the keepalive ping and is removed at once.
func TestKeepaliveFailureRemovesSession(t *testing.T) {
	r := NewRegistry(testLimits)
	acc := &Acceptor{Registry: r, HandshakeTimeout: 5 * time.Second, MaxSecret: 64,
		Log: slog.New(slog.DiscardHandler), KeepAlive: 100 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			acc.Handle(c)
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// yamux v0 frames by hand: open stream 1 (window update + SYN), the handshake as one
	// data frame, FIN; then this client never reads or answers a ping again.
	frame := func(typ byte, flags uint16, id uint32, body []byte) []byte {
		h := []byte{0, typ, byte(flags >> 8), byte(flags), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id),
			byte(len(body) >> 24), byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
		return append(h, body...)
	}
	var hs bytes.Buffer
	_ = WriteHandshake(&hs, "7:frozen")
	msg := append(frame(1, 1, 1, nil), frame(0, 0, 1, hs.Bytes())...)
	msg = append(msg, frame(1, 4, 1, nil)...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registration", func() bool { return r.Len() == 1 })
	waitFor(t, "frozen client removed after a missed keepalive", func() bool { return r.Len() == 0 })
}

// trcPair is pair with a client configured exactly as trc v0.1.0 runs go-yamux v1.2.4
// (DefaultConfig: 256 KiB stream windows, 64 KiB frames), whose streams are handed to serve.
func trcPair(t *testing.T, r *Registry, secret string, serve func(*yamux.Stream)) *yamux.Session {
	t.Helper()
	srv, cli := trcMux(t, r, serve)
	if _, err := r.Register(secret, srv); err != nil {
		t.Fatal(err)
	}
	return cli
}

// trcMux is the router's side of a tunnel under r (not registered) and a default-configured
// go-yamux v1.2.4 client that hands every stream the router opens to serve.
func trcMux(t *testing.T, r *Registry, serve func(*yamux.Stream)) (*Mux, *yamux.Session) {
	t.Helper()
	a, b := net.Pipe()
	srv, err := r.NewMux(a, MuxConfig(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cli, err := yamux.Client(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			st, err := cli.AcceptStream()
			if err != nil {
				return
			}
			go serve(st)
		}
	}()
	t.Cleanup(func() { _ = cli.Close(); _ = srv.Close() })
	return srv, cli
}

// A default-configured trc (go-yamux v1.2.4) carries bulk data both ways under the router's
// larger windows and frames, and sees a stream the router abandons as reset (RST, not a
// half-close): its writes fail at once, so it drops its local connection.
func TestDefaultTrcBulkAndReset(t *testing.T) {
	r := NewRegistry(testLimits)
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	resetSeen := make(chan error, 1)
	trcPair(t, r, "1:trc", func(st *yamux.Stream) {
		var cmd [1]byte
		if _, err := io.ReadFull(st, cmd[:]); err != nil {
			return
		}
		switch cmd[0] {
		case 'e': // echo until EOF, then FIN
			_, _ = io.Copy(st, st)
			_ = st.Close()
		case 'd': // an endless download until the stream dies
			for {
				if _, err := st.Write(body[:64<<10]); err != nil {
					resetSeen <- err
					return
				}
			}
		}
	})
	st, err := r.Open("1:trc")
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		_, _ = st.Write([]byte{'e'})
		_, _ = st.Write(body)
		_ = st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("8 MiB echoed through a default trc: %d bytes, %v", len(got), err)
	}
	_ = st.Close()

	dl, err := r.Open("1:trc")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = dl.Write([]byte{'d'})
	if _, err := io.ReadFull(dl, make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	_ = dl.Close() // the public client went away
	select {
	case err := <-resetSeen:
		if !errors.Is(err, yamux.ErrConnectionReset) {
			t.Fatalf("trc's write after the router dropped the stream: %v, want a reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("trc kept writing into a stream the router dropped")
	}
	waitFor(t, "slots and budget freed", func() bool {
		s, _ := r.Get("1:trc")
		return len(r.global) == 0 && s.BufferBytes() == 0 && s.Streams() == 0
	})
}

// The budget caps a tunnel's streams at TunnelMemory/MinStreamWindow whatever
// MaxStreamsPerTunnel says, and window growth never takes the room of a free slot.
func TestBudgetBoundsStreamsAndGrowth(t *testing.T) {
	l := Limits{MaxStreamsPerTunnel: 1024, TunnelMemory: 4 * MinStreamWindow}
	if got := l.StreamSlots(); got != 4 {
		t.Fatalf("slots = %d, want 4", got)
	}
	b := newBudget(l.TunnelMemory, l.StreamSlots(), nil)
	open := func() *span {
		m, _ := b.span()
		s := m.(*span)
		if err := s.ReserveMemory(MinStreamWindow, 255); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := open()
	// one stream open, three slots free: no room to grow at all
	if err := s1.ReserveMemory(1, 128); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("growth into free slots' room: %v", err)
	}
	s1.Done()
	if b.Used() != 0 {
		t.Fatalf("used %d after Done", b.Used())
	}
	// two slots in a budget of eight minimum windows: one open stream may grow by six
	l = Limits{MaxStreamsPerTunnel: 2, TunnelMemory: 8 * MinStreamWindow}
	b = newBudget(l.TunnelMemory, l.StreamSlots(), nil)
	s1 = open()
	if err := s1.ReserveMemory(6*MinStreamWindow, 128); err != nil {
		t.Fatalf("growth within the spare budget: %v", err)
	}
	if err := s1.ReserveMemory(1, 128); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("growth past the budget: %v", err)
	}
	s2 := open() // the free slot's room was kept
	s1.ReleaseMemory(MinStreamWindow)
	s1.Done()
	s1.Done()
	s2.Done()
	if b.Used() != 0 || b.streams != 0 {
		t.Fatalf("used %d, streams %d after Done", b.Used(), b.streams)
	}
}

func TestTrimOnlyWhenTheLoadFell(t *testing.T) {
	for _, c := range []struct {
		peak, cur int64
		want      bool
	}{{32, 0, true}, {1000, 500, true}, {1000, 501, false}, {10, 0, false}, {100, 90, false}, {0, 0, false}} {
		if got := fellFrom(c.peak, c.cur); got != c.want {
			t.Errorf("fellFrom(%d, %d) = %v", c.peak, c.cur, got)
		}
	}
}
