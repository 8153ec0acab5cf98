package router

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	yamux "github.com/libp2p/go-yamux" // trc v0.1.0's multiplexer
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"tfgateway.dev/dataplane/router/internal/routes"
	"tfgateway.dev/dataplane/router/internal/testutil"
	"tfgateway.dev/dataplane/router/internal/tunnel"
)

func testIdentity(t testing.TB) *tunnel.Identity {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tunnel.NewIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// tftunnel runs the real client with extra flags (--pin ...); its output is returned.
func tftunnel(t *testing.T, secret, remote, local string, extra ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	args := append([]string{"--secret", secret, "--remote", remote, "--local", local, "--backoff", "1"}, extra...)
	cmd := exec.Command(testutil.Binary(t, "tftunnel"), args...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, out
}

func registrations(r *running, result string) float64 {
	return promtest.ToFloat64(r.Metrics.Registrations.WithLabelValues(result))
}

// legacyFrames is what trc sends first: stream 1 opened (window update + SYN), the
// handshake in one data frame, FIN.
func legacyFrames(secret string) []byte {
	frame := func(typ byte, flags uint16, id uint32, body []byte) []byte {
		h := make([]byte, 12, 12+len(body))
		h[1] = typ
		binary.BigEndian.PutUint16(h[2:], flags)
		binary.BigEndian.PutUint32(h[4:], id)
		binary.BigEndian.PutUint32(h[8:], uint32(len(body)))
		return append(h, body...)
	}
	var hs bytes.Buffer
	_ = tunnel.WriteHandshake(&hs, secret)
	b := append(frame(1, 1, 1, nil), frame(0, 0, 1, hs.Bytes())...)
	return append(b, frame(1, 4, 1, nil)...)
}

// dialFrom connects to addr from the loopback address src (127.0.0.x).
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", addr)
}

// clientSession is a client's yamux session (trc's go-yamux v1.2.4, its defaults) over c,
// closed with the test.
func clientSession(t *testing.T, c net.Conn) *yamux.Session {
	t.Helper()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	return sess
}

// legacyClient registers a legacy tunnel from src with hashicorp yamux (as trc would) and
// answers every stream with "legacy <name>".
func legacyClient(t *testing.T, src, addr, secret, name string) *yamux.Session {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	sess := clientSession(t, c)
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	_ = tunnel.WriteHandshake(st, secret)
	_ = st.Close()
	go serveHTTPStreams(sess, name)
	return sess
}

func serveHTTPStreams(sess *yamux.Session, name string) {
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			defer st.Close()
			buf := make([]byte, 4096)
			_, _ = st.Read(buf)
			body := name
			fmt.Fprintf(st, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}()
	}
}

// authClient registers with the authenticated protocol from this process (the same steps
// as tftunnel --pin) and serves "auth <name>".
func authClient(t *testing.T, addr, secret string, pin []byte, name string) (*yamux.Session, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := tunnel.ClientHandshake(ctx, c, secret, pin)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	sess := clientSession(t, tc)
	go serveHTTPStreams(sess, name)
	return sess, nil
}

func mustPin(t *testing.T, id *tunnel.Identity) []byte {
	t.Helper()
	p, err := tunnel.ParsePin(id.Pin)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The real tftunnel with --pin registers over TLS and serves; with a wrong pin it refuses
// the gateway (and sends nothing derived from the secret).
func TestAuthenticatedTunnelWithRealTftunnel(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id})
	const secret = "1234:s3cr3t"
	setRoute(t, rd, "auth.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	local := fmt.Sprintf("127.0.0.1:%d", plain)

	other := testIdentity(t)
	_, badOut := tftunnel(t, secret, r.trcAddr(), local, "--pin", other.Pin)
	testutil.WaitFor(t, 10*time.Second, "wrong pin refused by the client", func() bool {
		return strings.Contains(badOut.String(), "does not match --pin")
	})
	if r.Registry.Len() != 0 || registrations(r, "bad_proof") != 0 {
		t.Fatalf("a client with a wrong pin registered or sent a proof (tunnels %d)", r.Registry.Len())
	}

	_, out := tftunnel(t, secret, r.trcAddr(), local, "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })
	if s, _ := r.Registry.Get(secret); !s.Authenticated {
		t.Fatal("session not marked authenticated")
	}
	if got, err := get(r.http(), "auth.example"); err != nil || got != "local auth.example " {
		t.Fatalf("HTTP through an authenticated tunnel: %q, %v (client: %s)", got, err, out.String())
	}
	// Counted just after the session entered the registry (Len above).
	testutil.WaitFor(t, 5*time.Second, "registration counted", func() bool { return registrations(r, "ok_authenticated") == 1 })
}

// recorder is a TCP relay that keeps every byte the client sent.
type recorder struct {
	mu   sync.Mutex
	sent bytes.Buffer
}

func (rec *recorder) relay(t *testing.T, target string) string {
	t.Helper()
	port := tcpBackend(t, func(c net.Conn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			rec.mu.Lock()
			rec.sent.Write(buf[:n])
			rec.mu.Unlock()
			if _, werr := up.Write(buf[:n]); werr != nil || err != nil {
				return
			}
		}
	})
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// An eavesdropper who recorded a whole authenticated registration cannot register by
// replaying it, and a proof lifted out of one TLS session is refused in another.
func TestRecordedAuthenticatedHandshakeCannotBeReplayed(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id})
	const secret = "77:eavesdropped"
	setRoute(t, rd, "rec.example", "", secret, 0, 0)
	waitRoute(t, r, secret)

	rec := &recorder{}
	cmd, _ := tftunnel(t, secret, rec.relay(t, r.trcAddr()), fmt.Sprintf("127.0.0.1:%d", plain), "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "registered through the recorder", func() bool { return r.Registry.Len() == 1 })
	if _, err := get(r.http(), "rec.example"); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	testutil.WaitFor(t, 10*time.Second, "client gone", func() bool { return r.Registry.Len() == 0 })
	rec.mu.Lock()
	recorded := append([]byte(nil), rec.sent.Bytes()...)
	rec.mu.Unlock()
	if bytes.Contains(recorded, []byte(secret)) || bytes.Contains(recorded, []byte("eavesdropped")) {
		t.Fatal("the secret crossed the wire")
	}

	// replay the recorded client bytes on a fresh connection
	c, err := net.Dial("tcp", r.trcAddr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write(recorded)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
	testutil.WaitFor(t, 5*time.Second, "replay refused", func() bool { return registrations(r, "tls_failed") == 1 })
	if r.Registry.Len() != 0 {
		t.Fatal("a replayed registration was accepted")
	}

	// a proof valid for session A, sent in session B
	pin := mustPin(t, id)
	tlsDial := func() *tls.Conn {
		c, err := net.Dial("tcp", r.trcAddr())
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, VerifyConnection: tunnel.VerifyPin(pin), //nolint:gosec // pinned
			MinVersion: tls.VersionTLS13, NextProtos: []string{tunnel.ALPN}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	a, b := tlsDial(), tlsDial()
	defer a.Close()
	defer b.Close()
	csA := a.ConnectionState()
	expA, _ := csA.ExportKeyingMaterial(tunnel.ExporterLabel, nil, 32)
	tid := routes.TunnelIDOf(secret)
	msg := append(append([]byte{1}, tid[:]...), tunnel.Proof(secret, expA)...)
	if _, err := b.Write(msg); err != nil {
		t.Fatal(err)
	}
	ans := make([]byte, 2)
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(b, ans); err != nil || ans[0] != tunnel.StatusBadProof {
		t.Fatalf("a proof from another session: answer %v, %v", ans, err)
	}
	// The router answers before it counts the refusal: wait for the count.
	testutil.WaitFor(t, 5*time.Second, "the refusal counted as bad_proof", func() bool {
		return registrations(r, "bad_proof") == 1
	})
	if r.Registry.Len() != 0 {
		t.Fatal("a transplanted proof registered")
	}
}

// Without the secret nobody takes a live authenticated route: not with the id and a
// wrong proof, not with a legacy handshake (even one carrying the secret, seen elsewhere).
// Two holders of the secret: the newest proven registration replaces the older.
func TestNoTakeoverOfAnAuthenticatedTunnel(t *testing.T) {
	rd := testutil.StartRedis(t)
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id})
	const secret = "5:owner"
	setRoute(t, rd, "own.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	pin := mustPin(t, id)
	if _, err := authClient(t, r.trcAddr(), secret, pin, "owner"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "owner registered", func() bool { return r.Registry.Len() == 1 })
	served := func(want string) {
		t.Helper()
		if got, err := get(r.http(), "own.example"); err != nil || got != want {
			t.Fatalf("own.example: %q, %v; want %q", got, err, want)
		}
	}
	served("owner")

	// the id (a hash of the secret) with a guessed proof
	if _, err := authClient(t, r.trcAddr(), "5:guess", pin, "thief"); err == nil {
		t.Fatal("a client without the secret registered")
	}
	c, _ := net.Dial("tcp", r.trcAddr())
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{tunnel.ALPN}}) //nolint:gosec // attacker
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tid := routes.TunnelIDOf(secret)
	_, _ = tc.Write(append(append([]byte{1}, tid[:]...), make([]byte, 32)...))
	ans := make([]byte, 2)
	if _, err := io.ReadFull(tc, ans); err != nil || ans[0] != tunnel.StatusBadProof {
		t.Fatalf("wrong proof: answer %v, %v", ans, err)
	}
	_ = tc.Close()
	// a legacy registration with the secret itself
	legacyClient(t, "127.0.0.1", r.trcAddr(), secret, "thief")
	testutil.WaitFor(t, 5*time.Second, "legacy takeover refused", func() bool { return registrations(r, "protected") == 1 })
	served("owner")

	// the holder of the secret again (a restarted client): the newest proven one serves
	if _, err := authClient(t, r.trcAddr(), secret, pin, "owner2"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "second holder serves", func() bool {
		got, err := get(r.http(), "own.example")
		return err == nil && got == "owner2"
	})
	if r.Registry.Len() != 1 {
		t.Fatalf("%d tunnels for one secret", r.Registry.Len())
	}
}

// Legacy trc clients register by default and are refused when legacy tunnels are off; a
// legacy handshake for a secret no route references is refused before any yamux session,
// and the client is served once the route appears and it reconnects.
func TestLegacyTunnelsAndUnknownSecrets(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	local := fmt.Sprintf("127.0.0.1:%d", plain)

	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: testIdentity(t)})
	const secret = "9:later"
	tftunnel(t, secret, r.trcAddr(), local) // legacy, --backoff 1
	testutil.WaitFor(t, 10*time.Second, "unknown secret refused", func() bool { return registrations(r, "unknown_secret") >= 2 })
	if r.Registry.Len() != 0 {
		t.Fatal("a secret without a route registered")
	}
	setRoute(t, rd, "later.example", "", secret, 0, 0)
	start := time.Now()
	testutil.WaitFor(t, 10*time.Second, "served once the route exists", func() bool {
		got, err := get(r.http(), "later.example")
		return err == nil && got == "local later.example "
	})
	t.Logf("route created -> served through the reconnecting client in %v (--backoff 1)", time.Since(start).Round(time.Millisecond))

	off := startRouter(t, rd.Port, "", Options{TunnelIdentity: testIdentity(t), RefuseLegacyTunnels: true})
	testutil.WaitFor(t, 5*time.Second, "route", func() bool { return off.Table.HasSecret(secret) })
	tftunnel(t, secret, off.trcAddr(), local)
	testutil.WaitFor(t, 10*time.Second, "legacy refused", func() bool { return registrations(off, "legacy_disabled") >= 1 })
	if off.Registry.Len() != 0 {
		t.Fatal("legacy client registered with legacy tunnels off")
	}
}

// One source at its limits (open connections, then handshakes per minute) leaves another
// source's registration working.
func TestPerSourceLimits(t *testing.T) {
	rd := testutil.StartRedis(t)
	r := startRouter(t, rd.Port, "", Options{TunnelSources: tunnel.SourceLimits{
		HandshakesPerMinute: 6, HandshakeBurst: 6, MaxConnsPerSource: 3, MaxSources: 16}})
	const secret = "3:fair"
	setRoute(t, rd, "fair.example", "", secret, 0, 0)
	waitRoute(t, r, secret)

	// source A: 4 silent connections; its budget is 3, so exactly one is closed at once
	// (whichever the router admitted last)
	var idle []net.Conn
	for range 4 {
		c, err := dialFrom("127.0.0.2", r.trcAddr())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	closed := make(chan bool, len(idle))
	for _, c := range idle {
		go func() { closed <- closedWithin(c, 2*time.Second) }()
	}
	n := 0
	for range idle {
		if <-closed {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 4 connections of source A closed, want 1", n)
	}
	for _, c := range idle {
		_ = c.Close()
	}
	// source A: handshakes until the bucket is empty
	testutil.WaitFor(t, 5*time.Second, "source A rate limited", func() bool {
		c, err := dialFrom("127.0.0.2", r.trcAddr())
		if err == nil {
			_, _ = c.Write(legacyFrames("3:nope"))
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}
		return registrations(r, tunnel.ReasonSourceRate) >= 3
	})
	// source B registers and serves
	legacyClient(t, "127.0.0.3", r.trcAddr(), secret, "from-b")
	testutil.WaitFor(t, 5*time.Second, "source B served", func() bool {
		got, err := get(r.http(), "fair.example")
		return err == nil && got == "from-b"
	})
	// (more than one when the router had not yet seen the idle ones close)
	if v := registrations(r, tunnel.ReasonSourceConns); v < 1 {
		t.Fatalf("source_conns_limited = %v", v)
	}
}

// countingHandler counts log records (the router's log volume under a flood).
type countingHandler struct {
	slog.Handler
	mu    sync.Mutex
	lines int
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.lines++
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}
func (h *countingHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &sharedCount{h, h.Handler.WithAttrs(a)}
}
func (h *countingHandler) WithGroup(g string) slog.Handler {
	return &sharedCount{h, h.Handler.WithGroup(g)}
}
func (h *countingHandler) count() int { h.mu.Lock(); defer h.mu.Unlock(); return h.lines }

type sharedCount struct {
	root *countingHandler
	slog.Handler
}

func (s *sharedCount) Handle(ctx context.Context, r slog.Record) error {
	s.root.mu.Lock()
	s.root.lines++
	s.root.mu.Unlock()
	return s.Handler.Handle(ctx, r)
}
func (s *sharedCount) WithAttrs(a []slog.Attr) slog.Handler {
	return &sharedCount{s.root, s.Handler.WithAttrs(a)}
}
func (s *sharedCount) WithGroup(g string) slog.Handler {
	return &sharedCount{s.root, s.Handler.WithGroup(g)}
}

// A flood of legacy handshakes with random secrets from eight source addresses: every one
// is refused before a yamux session exists, the router's heap stays flat, the real tunnel
// keeps serving, and the log holds summaries only. TFROUTER_FLOOD_SECONDS sets the length
// (default 5; the figures in SECURITY.md come from longer runs without -race).
func TestHandshakeFloodWithRandomSecrets(t *testing.T) {
	seconds := 5
	if v := os.Getenv("TFROUTER_FLOOD_SECONDS"); v != "" {
		fmt.Sscan(v, &seconds)
	}
	rd := testutil.StartRedis(t)
	logs := &countingHandler{Handler: slog.NewTextHandler(io.Discard, nil)}
	r := startRouter(t, rd.Port, "", Options{Log: slog.New(logs), RefusalSummaryInterval: time.Second,
		TunnelSources: tunnel.SourceLimits{HandshakesPerMinute: -1, MaxConnsPerSource: -1}})
	const secret = "42:real"
	setRoute(t, rd, "real.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	legacyClient(t, "127.0.0.1", r.trcAddr(), secret, "real")
	testutil.WaitFor(t, 5*time.Second, "real tunnel", func() bool { return r.Registry.Len() == 1 })

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before, linesBefore := heap(), logs.count()
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	var sent, served, failed atomic.Int64
	var wg sync.WaitGroup
	for s := 2; s <= 9; s++ {
		src := fmt.Sprintf("127.0.0.%d", s)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64)
				secret := make([]byte, 24)
				for time.Now().Before(deadline) {
					c, err := dialFrom(src, r.trcAddr())
					if err != nil {
						continue
					}
					_, _ = rand.Read(secret)
					_, _ = c.Write(legacyFrames(fmt.Sprintf("%x", secret)))
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					for {
						if _, err := c.Read(buf); err != nil {
							break
						}
					}
					_ = c.Close()
					sent.Add(1)
				}
			}()
		}
	}
	wg.Add(1)
	go func() { // the real tunnel during the flood
		defer wg.Done()
		for time.Now().Before(deadline) {
			if got, err := get(r.http(), "real.example"); err == nil && got == "real" {
				served.Add(1)
			} else {
				failed.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	wg.Wait()
	testutil.WaitFor(t, 10*time.Second, "every flood handshake counted", func() bool {
		return registrations(r, tunnel.ReasonUnknownSecret) >= float64(sent.Load())
	})
	var mid runtime.MemStats
	runtime.ReadMemStats(&mid)
	after := heap()
	lines := logs.count() - linesBefore
	t.Logf("flood: %d handshakes in %ds (%.0f/s) from 8 sources; refused unknown_secret %.0f; real tunnel %d ok, %d failed; heap %.1f -> %.1f MiB; %d log lines",
		sent.Load(), seconds, float64(sent.Load())/float64(seconds), registrations(r, tunnel.ReasonUnknownSecret),
		served.Load(), failed.Load(), float64(before)/(1<<20), float64(after)/(1<<20), lines)
	if failed.Load() != 0 || served.Load() == 0 {
		t.Fatalf("the real tunnel failed %d times during the flood", failed.Load())
	}
	if r.Registry.Len() != 1 {
		t.Fatalf("%d tunnels registered", r.Registry.Len())
	}
	if after > before+4<<20 {
		t.Fatalf("heap grew from %d to %d bytes", before, after)
	}
	if lines > seconds+5 {
		t.Fatalf("%d log lines for a %d s flood", lines, seconds)
	}
}
