package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	yamux "github.com/libp2p/go-yamux/v5"

	"tfgateway.dev/dataplane/router/internal/routes"
)

// Acceptor turns accepted client connections into registered sessions. Two protocols share
// the port, told apart by the first byte: 0x16 (a TLS record) is the authenticated
// protocol (auth.go), 0x00 (yamux version 0) is trc's legacy handshake.
type Acceptor struct {
	Registry         *Registry
	HandshakeTimeout time.Duration
	MaxSecret        int
	Log              *slog.Logger
	// Routes says which secrets live routes reference; a handshake for any other secret
	// is refused before a yamux session exists. nil: every secret is accepted (tests).
	Routes *routes.Table
	// Identity is the router's key for authenticated tunnels; nil: TLS clients are refused.
	Identity *Identity
	// RefuseLegacy refuses trc's clear-text handshake (accepted by default: the drop-in
	// promise).
	RefuseLegacy bool
	// Sources limits handshakes and connections per source address; nil: no limits.
	Sources *Sources
	// MaxPending bounds the connections in their handshake over all sources (the backstop
	// of the per-source limits, which a client with more sources than the table holds
	// escapes); over it a new connection is reset at once. 0: unlimited.
	MaxPending int
	pending    atomic.Int64
	// Refusals counts refusals and logs them as periodic summaries; nil: not logged.
	Refusals *Refusals
	// Tickets matches data connections to waiting public connections; nil: data
	// connections are off (the router does not offer protocol 2).
	Tickets *Tickets
	// OnRegister and OnReject, if set, observe outcomes (metrics); OnReject gets one of the
	// Reason* constants. OnDataConn gets the Reason* of a refused data connection (a matched
	// one is DataOK, counted by the public connection it serves).
	OnRegister func(s *Session)
	OnReject   func(reason string)
	OnDataConn func(result string)
	// KeepAlive and WriteTimeout override go-yamux's 30 s and 10 s (tests only).
	KeepAlive    time.Duration
	WriteTimeout time.Duration
}

// MaxStreamWindow is how far go-yamux may grow a stream's receive window while its reader
// keeps up (it doubles the window when updates come faster than a few round trips), each
// growth reserved from the tunnel's memory budget. Streams start at the protocol's 256 KiB
// (MinStreamWindow): a larger initial grant would be memory no budget accounts for. At
// 256 KiB for good a bulk sender stalls on window updates long before the connection is
// full (benchmarks/router).
const MaxStreamWindow = 8 << 20

// maxFrame is the largest data frame the router sends: fewer headers and fewer hand-offs
// to the send loop than go-yamux's 64 KiB. Any yamux peer reads frames up to the window
// it granted (go-yamux v1.2.4 included), so this is within the protocol.
const maxFrame = 256 << 10

// MuxConfig is go-yamux v1.2.4's default as far as the wire is concerned (keepalive every
// 30 s, 10 s write timeout, backlog 256), except windows that grow and larger frames. A
// tunnel client opens only its handshake stream, so few incoming streams are accepted.
func MuxConfig(logOut io.Writer) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 256
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 30 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.MaxIncomingStreams = 16
	c.InitialStreamWindowSize = MinStreamWindow
	c.MaxStreamWindowSize = MaxStreamWindow
	c.MaxMessageSize = maxFrame
	c.LogOutput = logOut
	return c
}

func (a *Acceptor) muxConfig(log *slog.Logger) *yamux.Config {
	cfg := MuxConfig(slogWriter{log})
	if a.KeepAlive > 0 {
		cfg.KeepAliveInterval = a.KeepAlive
	}
	if a.WriteTimeout > 0 {
		cfg.ConnectionWriteTimeout = a.WriteTimeout
	}
	return cfg
}

// Pending is the number of connections in their handshake now.
func (a *Acceptor) Pending() int { return int(a.pending.Load()) }

// Handle runs the handshake on conn and registers the session; it returns once the client
// is registered or refused (or, for a data connection, matched). The session then lives on its own goroutines. Refusals are
// counted and summarised, never logged one by one.
func (a *Acceptor) Handle(conn net.Conn) {
	src := SourceKey(conn.RemoteAddr())
	// A refused connection leaves the counts before it is closed, so whoever sees it closed
	// sees the counts without it.
	pendingDone := func() {}
	if a.MaxPending > 0 {
		if a.pending.Add(1) > int64(a.MaxPending) {
			a.pending.Add(-1)
			a.reject(src, ReasonTooManyPending)
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // a reset: nothing left in TIME_WAIT
			}
			_ = conn.Close()
			return
		}
		pendingDone = sync.OnceFunc(func() { a.pending.Add(-1) })
		defer pendingDone()
	}
	release := func() {}
	if a.Sources != nil {
		var reason string
		var settle func()
		if release, settle, reason = a.Sources.Admit(src); reason != "" {
			pendingDone()
			a.reject(src, reason)
			_ = conn.Close()
			return
		}
		defer settle()
	}
	if !a.handle(conn, src, release) {
		pendingDone()
		release()
		_ = conn.Close()
	}
}

// handle returns false when the connection was refused (the caller closes it).
func (a *Acceptor) handle(conn net.Conn, src netip.Addr, release func()) bool {
	_ = conn.SetDeadline(time.Now().Add(a.HandshakeTimeout))
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		a.charge(src)
		a.reject(src, ReasonBadHandshake)
		return false
	}
	if first[0] != DataConnMarker || a.Tickets == nil {
		a.charge(src)
	}
	switch first[0] {
	case DataConnMarker:
		if a.Tickets == nil {
			a.reject(src, ReasonBadHandshake)
			return false
		}
		return a.handleData(conn, src, release)
	case 0x16:
		return a.handleTLS(withReplay(conn, first[:]), src, release)
	case 0:
		if a.RefuseLegacy {
			a.reject(src, ReasonLegacyDisabled)
			return false
		}
		return a.handleLegacy(conn, first[:], src, release)
	default:
		a.reject(src, ReasonBadHandshake)
		return false
	}
}

func (a *Acceptor) handleLegacy(conn net.Conn, first []byte, src netip.Addr, release func()) bool {
	secret, raw, err := PeekLegacyHandshake(io.MultiReader(bytes.NewReader(first), conn), a.MaxSecret)
	if err != nil {
		a.reject(src, ReasonBadHandshake)
		return false
	}
	if a.Routes != nil && !a.Routes.HasSecret(secret) {
		a.reject(src, ReasonUnknownSecret)
		return false
	}
	// Known: replay what was read into a real yamux session, which accepts the handshake
	// stream and reads the same bytes again.
	log := a.Log.With("remote", conn.RemoteAddr().String())
	_ = conn.SetDeadline(time.Time{})
	mux, err := a.Registry.NewMux(withReplay(conn, raw), a.muxConfig(log))
	if err != nil {
		a.reject(src, ReasonOther)
		return false
	}
	timeout := time.AfterFunc(a.HandshakeTimeout, func() { _ = mux.Close() })
	st, err := mux.AcceptStream()
	timeout.Stop()
	if err != nil {
		_ = mux.Close()
		a.reject(src, ReasonBadHandshake)
		return false
	}
	_ = st.SetReadDeadline(time.Now().Add(a.HandshakeTimeout))
	again, err := ReadHandshake(st, a.MaxSecret)
	_ = st.Close()
	if err != nil || again != secret {
		_ = mux.Close()
		a.reject(src, ReasonBadHandshake)
		return false
	}
	return a.register(log, mux, secret, false, src, release)
}

func (a *Acceptor) handleTLS(conn net.Conn, src netip.Addr, release func()) bool {
	if a.Identity == nil {
		a.reject(src, ReasonAuthOff)
		return false
	}
	lookup := func(id routes.TunnelID) (string, bool) { return "", false }
	if a.Routes != nil {
		lookup = a.Routes.SecretByID
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.HandshakeTimeout)
	defer cancel()
	protos := []string{ALPN}
	if a.Tickets != nil {
		protos = []string{ALPNData, ALPN}
	}
	tc, secret, err := serverAuth(ctx, conn, a.Identity, lookup, protos)
	if err != nil {
		reason := ReasonOther
		var ar *authRefusal
		if errors.As(err, &ar) {
			reason = ar.reason
		}
		a.reject(src, reason)
		return false
	}
	// The answer goes out before the yamux session starts, so no stream frame can come
	// before it; a registration that then fails closes the connection (the client retries).
	if err := answer(tc, StatusOK, "registered"); err != nil {
		a.reject(src, ReasonBadHandshake)
		return false
	}
	_ = conn.SetDeadline(time.Time{})
	log := a.Log.With("remote", conn.RemoteAddr().String())
	mux, err := a.Registry.NewMux(tc, a.muxConfig(log))
	if err != nil {
		a.reject(src, ReasonOther)
		return false
	}
	mux.dataConns = tc.ConnectionState().NegotiatedProtocol == ALPNData
	return a.register(log, mux, secret, true, src, release)
}

// DataOK is the metric result of a data connection matched to its public connection.
const DataOK = "ok"

// handleData reads a data connection's ticket and hands the connection to the public
// connection waiting for it. A refused ticket costs no log line (counted in the refusal
// summary and metrics) and a handshake token of its source (Sources.Charge); a matched one
// costs none and leaves its source's connection count.
func (a *Acceptor) handleData(conn net.Conn, src netip.Addr, release func()) bool {
	tk, err := ReadTicket(conn)
	if err != nil {
		a.rejectData(src, ReasonBadHandshake)
		return false
	}
	_ = conn.SetDeadline(time.Time{})
	if !a.Tickets.Claim(tk, src, &DataConn{Conn: conn, Release: func() {}}) {
		a.rejectData(src, ReasonBadTicket)
		return false
	}
	// Matched: from now on the connection is bounded by its tunnel's stream slot (held for
	// its life, Limits.MaxStreamsPerTunnel and MaxStreams), not by its source's connections
	// on this port, which bound what is not yet authenticated: a busy tunnel (or several
	// behind one NAT) must not run out of them.
	// (Counted as DataOK by the public connection that takes it, before any byte moves, so
	// the count is there before anyone can see the connection carried.)
	release()
	return true
}

func (a *Acceptor) rejectData(src netip.Addr, reason string) {
	a.charge(src)
	a.reject(src, reason)
	if a.OnDataConn != nil {
		a.OnDataConn(reason)
	}
}

// register stores the session and watches it; on failure the mux is closed.
func (a *Acceptor) register(log *slog.Logger, mux *Mux, secret string, authenticated bool, src netip.Addr, release func()) bool {
	sess, err := a.Registry.RegisterAs(secret, mux, authenticated)
	if err != nil {
		_ = mux.Close()
		reason := ReasonOther
		switch {
		case errors.Is(err, ErrProtected):
			reason = ReasonProtected
		case errors.Is(err, ErrTooManyTunnels):
			reason = ReasonTooMany
		}
		a.reject(src, reason)
		return false
	}
	// The secret's last route may have ended between the handshake's check and now; its
	// revocation (Registry.CloseSecret, after the table changed) then found no session to
	// close, so the table, read after registering, says so.
	if a.Routes != nil && !a.Routes.HasSecret(secret) {
		_ = mux.Close()
		a.reject(src, ReasonUnknownSecret)
		return false
	}
	log.Info("tunnel registered", "tunnel", sess.Label, "authenticated", authenticated)
	if a.OnRegister != nil {
		a.OnRegister(sess)
	}
	// Clients never open more streams; refuse any that come so they do not pile up.
	go func() {
		for {
			extra, err := mux.AcceptStream()
			if err != nil {
				return
			}
			_ = extra.Reset()
		}
	}()
	go func() {
		<-mux.CloseChan()
		release()
		log.Info("tunnel closed", "tunnel", sess.Label)
	}()
	return true
}

func (a *Acceptor) reject(src netip.Addr, reason string) {
	if a.Refusals != nil {
		a.Refusals.Note(reason, src)
	}
	if a.OnReject != nil {
		a.OnReject(reason)
	}
}

func (a *Acceptor) charge(src netip.Addr) {
	if a.Sources != nil {
		a.Sources.Charge(src)
	}
}

// slogWriter sends yamux's own log lines to slog at debug level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug("yamux", "msg", string(p))
	return len(p), nil
}
