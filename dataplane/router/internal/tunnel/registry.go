package tunnel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	yamux "github.com/libp2p/go-yamux/v5"
)

// Errors returned by Registry.Open; each maps to a metric and a closed public connection.
var (
	ErrNoTunnel       = errors.New("no tunnel registered for this secret")
	ErrTunnelBusy     = errors.New("tunnel stream limit reached")
	ErrGlobalBusy     = errors.New("global tunnel stream limit reached")
	ErrOpenTimeout    = errors.New("timed out opening a tunnel stream")
	ErrTooManyTunnels = errors.New("tunnel limit reached")
	// ErrProtected: a legacy registration may not replace a live authenticated tunnel.
	ErrProtected = errors.New("an authenticated tunnel holds this secret; legacy registrations cannot replace it")
)

// Limits bound what tunnels may hold.
type Limits struct {
	MaxTunnels          int // distinct secrets registered at once
	MaxStreamsPerTunnel int // concurrent streams on one tunnel (see TunnelMemory)
	// TunnelMemory bounds the receive buffers of one tunnel in bytes: every stream holds at
	// least MinStreamWindow, so a tunnel has at most TunnelMemory/MinStreamWindow streams
	// whatever MaxStreamsPerTunnel says, and windows grow past the minimum (for bulk
	// transfers) only within what the free stream slots leave.
	TunnelMemory int
	MaxStreams   int // concurrent streams over all tunnels
	// TotalMemory bounds the receive buffers of all tunnels together in bytes, as
	// TunnelMemory does for one: at most TotalMemory/MinStreamWindow streams overall, and
	// windows grow only within what the free slots leave. 0: no bound over all tunnels
	// (tests).
	TotalMemory int
	OpenTimeout time.Duration // wait for a free slot plus OpenStream
}

// StreamSlots is the number of concurrent streams one tunnel may have under l.
func (l Limits) StreamSlots() int {
	return max(1, min(l.MaxStreamsPerTunnel, l.TunnelMemory/MinStreamWindow))
}

// GlobalSlots is the number of concurrent streams all tunnels together may have under l.
func (l Limits) GlobalSlots() int {
	if l.TotalMemory <= 0 {
		return max(1, l.MaxStreams)
	}
	return max(1, min(l.MaxStreams, l.TotalMemory/MinStreamWindow))
}

// Mux is a tunnel client's multiplexed connection with the memory budget of its streams.
type Mux struct {
	*yamux.Session
	budget *budget
	// dataConns: the client negotiated protocol 2 (data connections, dataconn.go).
	dataConns bool
}

// NewMux starts the server side of yamux on conn with a receive-memory budget of
// limits.TunnelMemory for its streams.
func (r *Registry) NewMux(conn net.Conn, cfg *yamux.Config) (*Mux, error) {
	b := newBudget(r.limits.TunnelMemory, r.limits.StreamSlots(), r.mem)
	s, err := yamux.Server(conn, cfg, b.span)
	if err != nil {
		return nil, err
	}
	return &Mux{Session: s, budget: b}, nil
}

// Session is one registered trc connection.
type Session struct {
	Secret string
	Label  string // safe for logs and metrics (never the secret)
	// Authenticated: registered with the TLS protocol and a proof of the secret.
	Authenticated bool
	mux           *Mux
	slots         chan struct{}
	// dataMisses counts data connections that did not come, in a row; at DataMissLimit the
	// session carries its connections inline for the rest of its life.
	dataMisses atomic.Int32

	// byRoute holds the open streams by the route they serve, so that a route that ends
	// (deleted, or its name given to another secret) takes its streams with it.
	smu     sync.Mutex
	byRoute map[string]map[*Stream]struct{}
}

// DataMissLimit is how many tickets in a row may go unused before a session stops asking
// for data connections: a client whose data connections cannot reach the router (a NAT
// that gives them another source address, a firewall that lets only one connection
// through) then loses DataMissLimit connections, not all of them.
const DataMissLimit = 3

// BufferBytes is the receive window the session's streams hold now (bounded by
// Limits.TunnelMemory).
func (s *Session) BufferBytes() int { return s.mux.budget.Used() }

// DataConns reports whether the client negotiated data connections (protocol 2).
func (s *Session) DataConns() bool { return s.mux.dataConns }

// UseDataConns reports whether a new public connection should ask for a data connection:
// protocol 2, and fewer than DataMissLimit tickets in a row went unused.
func (s *Session) UseDataConns() bool {
	return s.mux.dataConns && s.dataMisses.Load() < DataMissLimit
}

// DataConnCame records whether a ticket's data connection came; it returns true when this
// miss is the one that turns data connections off for the session.
func (s *Session) DataConnCame(came bool) (turnedOff bool) {
	if came {
		s.dataMisses.Store(0)
		return false
	}
	return s.dataMisses.Add(1) == DataMissLimit
}

// Streams is the number of streams open on the session.
func (s *Session) Streams() int { return s.mux.NumStreams() }

// Registry maps secrets to live sessions. All methods are safe for concurrent use.
type Registry struct {
	limits Limits
	global chan struct{}
	mem    *budget // all tunnels' receive buffers (the parent of each tunnel's budget)
	peak   peakStreams

	mu       sync.Mutex
	sessions map[string]*Session

	// OnChange, if set, is called (outside the lock) with the number of live tunnels.
	OnChange func(active int)
}

// NewRegistry returns an empty registry.
func NewRegistry(l Limits) *Registry {
	slots := l.GlobalSlots()
	r := &Registry{limits: l, global: make(chan struct{}, slots), sessions: map[string]*Session{}}
	if l.TotalMemory > 0 {
		r.mem = newBudget(l.TotalMemory, slots, nil)
	}
	return r
}

// BufferBytes is the receive window all tunnels' streams hold now (bounded by
// Limits.TotalMemory; 0 without that bound).
func (r *Registry) BufferBytes() int {
	if r.mem == nil {
		return 0
	}
	return r.mem.Used()
}

// Label derives a printable name: the "<user>:" prefix tfgateway puts on secrets, or a
// short hash, so secrets never reach logs or metrics.
func Label(secret string) string {
	if user, _, ok := strings.Cut(secret, ":"); ok && user != "" && len(user) <= 32 {
		return user
	}
	sum := sha256.Sum256([]byte(secret))
	return "h" + hex.EncodeToString(sum[:4])
}

// Register stores mux for secret. A previous session for the same secret is closed (last
// registration wins, as in trs, but without leaking the old one). The session is removed
// as soon as it dies.
func (r *Registry) Register(secret string, mux *Mux) (*Session, error) {
	return r.RegisterAs(secret, mux, false)
}

// RegisterAs is Register with the way the client registered: an authenticated session
// (proof of the secret over TLS) replaces any session for its secret, a legacy one replaces
// only a legacy session (ErrProtected otherwise), so a secret seen in a legacy handshake
// cannot take a tunnel whose client proves the secret.
func (r *Registry) RegisterAs(secret string, mux *Mux, authenticated bool) (*Session, error) {
	s := &Session{Secret: secret, Label: Label(secret), Authenticated: authenticated, mux: mux,
		slots: make(chan struct{}, r.limits.StreamSlots()), byRoute: map[string]map[*Stream]struct{}{}}
	r.mu.Lock()
	old := r.sessions[secret]
	if old != nil && old.Authenticated && !authenticated && !old.mux.IsClosed() {
		r.mu.Unlock()
		return nil, ErrProtected
	}
	if old == nil && r.limits.MaxTunnels > 0 && len(r.sessions) >= r.limits.MaxTunnels {
		r.mu.Unlock()
		return nil, ErrTooManyTunnels
	}
	r.sessions[secret] = s
	n := len(r.sessions)
	r.mu.Unlock()
	if old != nil {
		_ = old.mux.Close()
	}
	r.changed(n)
	go func() {
		<-mux.CloseChan()
		r.remove(s)
	}()
	return s, nil
}

func (r *Registry) remove(s *Session) {
	r.mu.Lock()
	cur := r.sessions[s.Secret]
	if cur == s {
		delete(r.sessions, s.Secret)
	}
	n := len(r.sessions)
	r.mu.Unlock()
	if cur == s {
		r.changed(n)
	}
}

func (r *Registry) changed(n int) {
	if r.OnChange != nil {
		r.OnChange(n)
	}
}

// Len is the number of live tunnels.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Get returns the live session for secret.
func (r *Registry) Get(secret string) (*Session, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[secret]
	return s, ok
}

// Stream is an open tunnel stream; Close releases it and its slots.
type Stream struct {
	*yamux.Stream
	Session *Session
	route   string
	once    sync.Once
	release func()
	revoked chan struct{}
	revoke  sync.Once
}

// Close ends the stream for good and frees its slots once. A stream both sides finished
// (FIN each way) is simply forgotten; otherwise it is reset (yamux RST), so the tunnel
// client stops sending and drops its end at once, and the receive buffer is freed now
// rather than after yamux's stream-close timeout. CloseWrite is the half-close.
func (s *Stream) Close() error {
	err := s.Reset()
	s.once.Do(func() {
		s.Session.forget(s)
		s.release()
	})
	return err
}

// Revoked is closed when the stream's route ended (RevokeRoute): whoever carries the
// stream's connection elsewhere (a data connection) closes it then.
func (s *Stream) Revoked() <-chan struct{} { return s.revoked }

func (s *Stream) revokeNow() {
	s.revoke.Do(func() {
		close(s.revoked)
		_ = s.Reset()
	})
}

// track records st under its route.
func (s *Session) track(st *Stream) {
	if st.route == "" {
		return
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	m := s.byRoute[st.route]
	if m == nil {
		m = map[*Stream]struct{}{}
		s.byRoute[st.route] = m
	}
	m[st] = struct{}{}
}

func (s *Session) forget(st *Stream) {
	if st.route == "" {
		return
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	if m := s.byRoute[st.route]; m != nil {
		delete(m, st)
		if len(m) == 0 {
			delete(s.byRoute, st.route)
		}
	}
}

// Open opens a stream to the tunnel registered for secret, waiting at most
// limits.OpenTimeout for free slots (backpressure) and for the open itself.
func (r *Registry) Open(secret string) (*Stream, error) { return r.OpenFor(secret, "") }

// OpenFor is Open for a public connection to route (its host name): RevokeRoute(secret,
// route) resets the streams opened for it. An empty route is not tracked.
func (r *Registry) OpenFor(secret, route string) (*Stream, error) {
	s, ok := r.Get(secret)
	if !ok {
		return nil, ErrNoTunnel
	}
	deadline := time.Now().Add(r.limits.OpenTimeout)
	timer := time.NewTimer(r.limits.OpenTimeout)
	defer timer.Stop()
	select {
	case r.global <- struct{}{}:
	case <-timer.C:
		return nil, ErrGlobalBusy
	}
	select {
	case s.slots <- struct{}{}:
	case <-timer.C:
		<-r.global
		return nil, ErrTunnelBusy
	case <-s.mux.CloseChan():
		<-r.global
		return nil, ErrNoTunnel
	}
	r.peak.saw(len(r.global))
	release := func() { <-s.slots; <-r.global }
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	st, err := s.mux.OpenStream(ctx)
	if err != nil {
		release()
		switch {
		case errors.Is(err, yamux.ErrSessionShutdown):
			return nil, ErrNoTunnel
		case errors.Is(err, context.DeadlineExceeded):
			return nil, ErrOpenTimeout
		}
		return nil, err
	}
	stream := &Stream{Stream: st, Session: s, route: route, release: release, revoked: make(chan struct{})}
	s.track(stream)
	return stream, nil
}

// CloseSecret closes the session registered for secret, if any (no route references the
// secret any more): its streams are reset, the client sees its connection end, and the
// session leaves the registry at once. It reports whether there was one.
func (r *Registry) CloseSecret(secret string) bool {
	r.mu.Lock()
	s := r.sessions[secret]
	if s != nil {
		delete(r.sessions, secret)
	}
	n := len(r.sessions)
	r.mu.Unlock()
	if s == nil {
		return false
	}
	_ = s.mux.Close()
	r.changed(n)
	return true
}

// RevokeRoute resets the streams of secret's session opened for route (the route was
// deleted or its name now belongs to another secret, which the session's client may not
// serve) and returns how many there were.
func (r *Registry) RevokeRoute(secret, route string) int {
	s, ok := r.Get(secret)
	if !ok || route == "" {
		return 0
	}
	s.smu.Lock()
	streams := make([]*Stream, 0, len(s.byRoute[route]))
	for st := range s.byRoute[route] {
		streams = append(streams, st)
	}
	s.smu.Unlock()
	for _, st := range streams {
		st.revokeNow()
	}
	return len(streams)
}

// CloseAll closes every session (shutdown).
func (r *Registry) CloseAll() {
	r.mu.Lock()
	all := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		_ = s.mux.Close()
	}
}

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// RemoteAddr of the tunnel client.
func (s *Session) RemoteAddr() net.Addr { return s.mux.RemoteAddr() }

// Closed reports whether the session has ended.
func (s *Session) Closed() bool { return s.mux.IsClosed() }
