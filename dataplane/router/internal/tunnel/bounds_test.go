package tunnel

import (
	"errors"
	"testing"
	"time"

	yamux "github.com/libp2p/go-yamux"
)

// pairIn is pair with the server side's budget under r (so r's bound over all tunnels
// applies); the client writes flood bytes on every stream the router opens, reading
// nothing: the most receive buffer a hostile tunnel client can make the router hold.
func pairIn(t *testing.T, r *Registry, flood int) (*Mux, *yamux.Session) {
	t.Helper()
	return trcMux(t, r, func(st *yamux.Stream) { _, _ = st.Write(make([]byte, flood)) })
}

// The bound over all tunnels: TotalMemory/MinStreamWindow streams at once whatever each
// tunnel's share, clients that send without being read fill no more than TotalMemory, and
// window growth in one tunnel never takes the room of another's free slot.
func TestTotalMemoryBoundsAllTunnels(t *testing.T) {
	l := Limits{MaxTunnels: 10, MaxStreamsPerTunnel: 8, TunnelMemory: 8 * MinStreamWindow, MaxStreams: 1000,
		TotalMemory: 4 * MinStreamWindow, OpenTimeout: 200 * time.Millisecond}
	if got := l.GlobalSlots(); got != 4 {
		t.Fatalf("global slots = %d, want 4", got)
	}
	r := NewRegistry(l)
	for _, secret := range []string{"a", "b"} {
		s, _ := pairIn(t, r, 1<<20)
		if _, err := r.Register(secret, s); err != nil {
			t.Fatal(err)
		}
	}
	var open []*Stream
	for _, secret := range []string{"a", "a", "a", "b"} {
		st, err := r.Open(secret)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	if _, err := r.Open("b"); !errors.Is(err, ErrGlobalBusy) {
		t.Fatalf("a fifth stream over two tunnels: %v, want ErrGlobalBusy", err)
	}
	// The clients send 1 MiB on each stream and nobody reads: each may fill its 256 KiB
	// window, which its budgets reserved when it opened, and no more.
	a, _ := r.Get("a")
	if a.BufferBytes() != 3*MinStreamWindow || r.BufferBytes() > l.TotalMemory {
		t.Fatalf("tunnel a holds %d, all %d (bound %d)", a.BufferBytes(), r.BufferBytes(), l.TotalMemory)
	}
	for _, st := range open {
		_ = st.Close()
	}
	waitFor(t, "all memory returned", func() bool { return r.BufferBytes() == 0 && len(r.global) == 0 })

	// Growth: a tunnel's own budget would let its one stream grow by six minimum windows,
	// the budget over all tunnels only by what leaves a minimum window for every free slot.
	parent := newBudget(6*MinStreamWindow, 4, nil)
	b1 := newBudget(8*MinStreamWindow, 2, parent)
	b2 := newBudget(8*MinStreamWindow, 2, parent)
	reserve := func(b *budget) *span {
		m, _ := b.span()
		s := m.(*span)
		if err := s.ReserveMemory(MinStreamWindow, 255); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := reserve(b1)
	if err := s1.ReserveMemory(2*MinStreamWindow+1, 128); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("growth into the room of free slots over all tunnels: %v", err)
	}
	if err := s1.ReserveMemory(2*MinStreamWindow, 128); err != nil {
		t.Fatalf("growth within the room over all tunnels: %v", err)
	}
	s2, s3, s4 := reserve(b1), reserve(b2), reserve(b2) // the free slots' room was kept
	if err := s3.ReserveMemory(1, 128); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("growth past the bound over all tunnels: %v", err)
	}
	s1.Done()
	if err := s3.ReserveMemory(2*MinStreamWindow, 128); err != nil {
		t.Fatalf("growth into what another tunnel's stream gave back: %v", err)
	}
	s4.Done()
	for _, s := range []*span{s2, s3} {
		s.Done()
	}
	if parent.Used() != 0 || parent.streams != 0 || b1.Used() != 0 || b2.Used() != 0 {
		t.Fatalf("left after Done: all %d/%d streams, tunnels %d %d", parent.Used(), parent.streams, b1.Used(), b2.Used())
	}
}

// CloseSecret ends the session at once and removes it; RevokeRoute resets the streams
// opened for one route and leaves the session and its other streams.
func TestRegistryCloseSecretAndRevokeRoute(t *testing.T) {
	r := NewRegistry(testLimits)
	s, cli := pairIn(t, r, 0)
	if _, err := r.Register("a", s); err != nil {
		t.Fatal(err)
	}
	moved, err := r.OpenFor("a", "moved.example")
	if err != nil {
		t.Fatal(err)
	}
	kept, err := r.OpenFor("a", "kept.example")
	if err != nil {
		t.Fatal(err)
	}
	if n := r.RevokeRoute("a", "moved.example"); n != 1 {
		t.Fatalf("revoked %d streams, want 1", n)
	}
	select {
	case <-moved.Revoked():
	default:
		t.Fatal("revoked stream not marked")
	}
	if _, err := moved.Write([]byte("x")); err == nil {
		t.Fatal("a revoked stream still writes")
	}
	if _, err := kept.Write([]byte("x")); err != nil {
		t.Fatalf("the other route's stream: %v", err)
	}
	_ = moved.Close()
	_ = kept.Close()
	if n := r.RevokeRoute("a", "moved.example"); n != 0 {
		t.Fatalf("closed streams revoked again: %d", n)
	}
	if !r.CloseSecret("a") || r.Len() != 0 || r.CloseSecret("a") {
		t.Fatal("CloseSecret did not remove the session once")
	}
	waitFor(t, "client sees the session end", cli.IsClosed)
	if _, err := r.Open("a"); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("open after CloseSecret: %v", err)
	}
}
