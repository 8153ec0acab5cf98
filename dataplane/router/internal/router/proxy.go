package router

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"tfgateway.dev/dataplane/router/internal/persource"
	"tfgateway.dev/dataplane/router/internal/routes"
	"tfgateway.dev/dataplane/router/internal/sniff"
	"tfgateway.dev/dataplane/router/internal/tunnel"
)

// Error kinds (metric label values).
const (
	kindPeekTimeout = "peek_timeout"
	kindPeekTooBig  = "peek_too_large"
	kindPeekBad     = "peek_malformed"
	kindNoRoute     = "no_route"
	kindNoPort      = "no_port"
	kindDial        = "dial"
	kindTunnel      = "tunnel"
	kindWrite       = "write"
	kindOverload    = "too_many_pending"
)

// enterPeek takes a pending slot; false means too many clients are mid-head right now (the
// global backstop behind the per-source shares).
func (r *Router) enterPeek(listener string, c net.Conn) bool {
	select {
	case r.pending <- struct{}{}:
		return true
	default:
		r.refuse(listener, c, kindOverload)
		return false
	}
}

// leavePeek ends the peek phase: the global slot and the source's share.
func (r *Router) leavePeek(k *persource.Ticket) {
	<-r.pending
	k.PeekDone()
}

func (r *Router) handleHTTP(c net.Conn, k *persource.Ticket) {
	if !r.enterPeek(ListenerHTTP, c) {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(r.opt.PeekTimeout))
	host, buf, err := sniff.HTTPHost(c, r.opt.HeaderLimit)
	r.leavePeek(k)
	if err != nil {
		r.peekFailed(ListenerHTTP, c, err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	r.route(ListenerHTTP, c, host, buf)
}

func (r *Router) handleTLS(c net.Conn, k *persource.Ticket) {
	if !r.enterPeek(ListenerTLS, c) {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(r.opt.PeekTimeout))
	host, buf, err := sniff.TLSServerName(c, r.opt.HeaderLimit)
	r.leavePeek(k)
	if err != nil && !errors.Is(err, sniff.ErrNotTLS) && !errors.Is(err, sniff.ErrBadHello) {
		r.peekFailed(ListenerTLS, c, err)
		return
	}
	// As in trs, bytes that are not a readable ClientHello route by the empty name, which
	// only the static CATCH_ALL can serve.
	_ = c.SetReadDeadline(time.Time{})
	r.route(ListenerTLS, c, host, buf)
}

func (r *Router) peekFailed(listener string, c net.Conn, err error) {
	kind := kindPeekBad
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		kind = kindPeekTimeout
	case errors.Is(err, sniff.ErrTooLarge):
		kind = kindPeekTooBig
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		kind = "client_closed"
	}
	r.fail(listener, NoRoute, kind)
	r.log.Debug("closing connection before routing", "listener", listener, "remote", c.RemoteAddr().String(), "reason", kind, "err", err)
}

func (r *Router) fail(listener, route, kind string) {
	r.Metrics.Errors.WithLabelValues(listener, route, kind).Inc()
	r.Metrics.Connections.WithLabelValues(listener, route, "error").Inc()
}

// route sends the connection to the service for host, replaying the peeked bytes.
func (r *Router) route(listener string, c net.Conn, host string, peeked []byte) {
	svc, label, ok := r.Table.Lookup(host)
	if !ok {
		r.fail(listener, NoRoute, kindNoRoute)
		r.log.Debug("no route", "listener", listener, "host", host)
		return
	}
	if r.terminated(listener, c, label, svc, peeked) {
		return
	}
	if svc.ProxyProtocol != 0 {
		peeked = append(proxyHeader(svc.ProxyProtocol, c), peeked...)
	}
	if svc.IsTunnel() {
		r.toTunnel(listener, c, label, svc, peeked)
		return
	}
	port := svc.HTTPPort
	if listener == ListenerTLS {
		port = svc.TLSPort
	}
	b, err := r.dialDirect(listener, label, svc, port)
	if err != nil {
		return
	}
	defer b.Close()
	if !r.replay(listener, label, b, peeked) {
		return
	}
	sent := int64(len(peeked))
	peeked = nil // not held for the life of the connection
	r.Metrics.Connections.WithLabelValues(listener, label, "ok").Inc()
	in, out := pipe(c, b)
	r.Metrics.Bytes.WithLabelValues(listener, label, "in").Add(float64(in + sent))
	r.Metrics.Bytes.WithLabelValues(listener, label, "out").Add(float64(out))
}

// dialDirect connects to a direct route's backend on port; a failure is counted and
// logged here.
func (r *Router) dialDirect(listener, label string, svc routes.Service, port uint16) (net.Conn, error) {
	if port == 0 {
		r.fail(listener, label, kindNoPort)
		return nil, errNoPort
	}
	if !svc.Static {
		// Decode already refused these; checked again here in case of a future code path.
		if err := r.opt.TargetPolicy(svc.Addr); err != nil {
			r.fail(listener, label, kindDial)
			return nil, err
		}
	}
	d := net.Dialer{Timeout: r.opt.DialTimeout}
	b, err := d.Dial("tcp", net.JoinHostPort(svc.Addr, strconv.Itoa(int(port))))
	if err != nil {
		r.fail(listener, label, kindDial)
		r.log.Info("backend dial failed", "listener", listener, "route", label, "err", err)
		return nil, err
	}
	return b, nil
}

var errNoPort = errors.New("the route has no port for this listener")

func (r *Router) replay(listener, label string, dst net.Conn, peeked []byte) bool {
	_ = dst.SetWriteDeadline(time.Now().Add(r.opt.DialTimeout))
	if _, err := dst.Write(peeked); err != nil {
		r.fail(listener, label, kindWrite)
		return false
	}
	_ = dst.SetWriteDeadline(time.Time{})
	return true
}

func (r *Router) toTunnel(listener string, c net.Conn, label string, svc routes.Service, peeked []byte) {
	tname := tunnel.Label(svc.ClientSecret)
	st, err := r.openStream(listener, label, svc)
	if err != nil {
		return
	}
	defer st.Close()
	var dest net.Conn = st
	inline := 0 // bytes of the inline marker, not the client's
	if st.Session.DataConns() {
		var dc *tunnel.DataConn
		ok := true
		if st.Session.UseDataConns() {
			dc, ok = r.dataConn(st, tname)
		}
		if !ok {
			r.fail(listener, label, kindTunnel)
			return
		}
		if dc == nil { // no ticket free, or data connections off: inline, announced by the stream's first byte
			peeked = append([]byte{tunnel.StreamInline}, peeked...)
			inline = 1
		} else {
			defer dc.Close()
			dest = dc.Conn
			// A data connection lives no longer than its tunnel: when the session ends (the
			// client died or was replaced), so do its connections, as its streams would.
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-st.Session.Done():
					_ = c.Close()
					_ = dc.Conn.Close()
				case <-done:
				}
			}()
		}
	}
	if !r.replay(listener, label, dest, peeked) {
		r.Metrics.TunnelStreams.WithLabelValues(tname, "write_error").Inc()
		return
	}
	peeked = peeked[inline:]
	r.Metrics.TunnelStreams.WithLabelValues(tname, "ok").Inc()
	r.Metrics.Connections.WithLabelValues(listener, label, "ok").Inc()
	in, out := pipe(c, dest)
	in += int64(len(peeked))
	r.Metrics.Bytes.WithLabelValues(listener, label, "in").Add(float64(in))
	r.Metrics.Bytes.WithLabelValues(listener, label, "out").Add(float64(out))
	r.Metrics.TunnelBytes.WithLabelValues(tname, "in").Add(float64(in))
	r.Metrics.TunnelBytes.WithLabelValues(tname, "out").Add(float64(out))
}

// dataConn asks the tunnel client for a data connection on stream st (protocol 2) and waits
// for it. (nil, true): no ticket is free, the bytes go inline in the stream; (nil, false):
// the data connection did not come (expired, the client refused it, the tunnel ended) and
// the public connection is closed: the client has the ticket and may be dialling, so the
// stream cannot safely carry the bytes instead.
func (r *Router) dataConn(st *tunnel.Stream, tname string) (*tunnel.DataConn, bool) {
	w, err := r.Tickets.Issue(st.Session)
	if err != nil {
		r.Metrics.DataConns.WithLabelValues("inline").Inc()
		return nil, true
	}
	msg := append([]byte{tunnel.StreamTicket}, w.Ticket[:]...)
	// The client closes the stream (FIN) once it has dialled and sent the ticket, and resets
	// it if it cannot: a reset ends the wait at once.
	refused := make(chan struct{})
	refuse := sync.OnceFunc(func() { close(refused) })
	go func() {
		var b [1]byte
		if _, err := st.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
			refuse()
		}
	}()
	_ = st.SetWriteDeadline(time.Now().Add(r.opt.DialTimeout))
	_, werr := st.Write(msg)
	_ = st.SetWriteDeadline(time.Time{})
	if werr != nil {
		refuse()
	}
	dc, err := r.Tickets.Wait(context.Background(), w, refused)
	if err != nil {
		result := "expired"
		switch {
		case werr != nil:
			result = "error"
		case errors.Is(err, tunnel.ErrNoTunnel) && st.Session.Closed():
			result = "tunnel_closed"
		case errors.Is(err, tunnel.ErrNoTunnel):
			result = "refused_by_client"
		}
		r.Metrics.DataConns.WithLabelValues(result).Inc()
		r.log.Debug("tunnel data connection failed", "tunnel", tname, "result", result)
		if (result == "expired" || result == "refused_by_client") && st.Session.DataConnCame(false) {
			r.log.Warn("tunnel data connections do not arrive; this tunnel's connections go through its session from now on",
				"tunnel", tname, "missed", tunnel.DataMissLimit, "remote", st.Session.RemoteAddr().String())
		}
		return nil, false
	}
	st.Session.DataConnCame(true)
	return dc, true
}

// openStream opens a stream of the route's tunnel; a failure is counted and logged here.
func (r *Router) openStream(listener, label string, svc routes.Service) (*tunnel.Stream, error) {
	st, err := r.Registry.Open(svc.ClientSecret)
	if err != nil {
		tname := tunnel.Label(svc.ClientSecret)
		r.fail(listener, label, kindTunnel)
		r.Metrics.TunnelStreams.WithLabelValues(tname, tunnelResult(err)).Inc()
		r.log.Info("tunnel unavailable", "listener", listener, "route", label, "tunnel", tname, "err", err)
		return nil, err
	}
	return st, nil
}

func tunnelResult(err error) string {
	switch {
	case errors.Is(err, tunnel.ErrNoTunnel):
		return "no_tunnel"
	case errors.Is(err, tunnel.ErrTunnelBusy):
		return "tunnel_busy"
	case errors.Is(err, tunnel.ErrGlobalBusy):
		return "global_busy"
	case errors.Is(err, tunnel.ErrOpenTimeout):
		return "open_timeout"
	}
	return "error"
}

type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// pipe copies both ways until both directions end. An EOF is passed on as a half-close so
// protocols that shut down one side keep working; an error tears down both sides (a tunnel
// stream is then reset, see tunnel.Stream.Close, so neither end keeps buffering for it). Between
// two *net.TCPConn, io.Copy uses splice(2) (zero copy in the kernel).
func pipe(client net.Conn, backend net.Conn) (in, out int64) {
	done := make(chan int64, 1)
	go func() {
		n, err := copyConn(backend, client)
		finish(backend, client, err)
		done <- n
	}()
	out, err := copyConn(client, backend)
	finish(client, backend, err)
	in = <-done
	return in, out
}

func copyConn(dst, src net.Conn) (int64, error) {
	// Direct routes: the concrete *net.TCPConn pair, spliced in the kernel (splice.go).
	if d, ok := dst.(*net.TCPConn); ok {
		if s, ok := src.(*net.TCPConn); ok {
			return spliceCopy(d, s)
		}
	}
	return copyAdaptive(dst, src)
}

// Copy buffers for tunnel streams (and terminated connections): a connection starts with a
// small buffer per direction and takes a large pooled one while its reads fill the buffer
// (a bulk transfer: fewer, larger yamux frames and fewer hand-offs to the send loop, each a
// goroutine switch), giving it back as soon as reads come in small pieces again. An idle or
// interactive connection so holds 2 x 16 KiB, not 2 x 256 KiB, for its whole life.
const (
	smallCopyBuf = 16 << 10
	largeCopyBuf = 256 << 10
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}

// copyAdaptive is io.Copy with the buffers above; EOF from src ends it without error.
func copyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	small := make([]byte, smallCopyBuf)
	buf := small
	var large *[]byte
	defer func() {
		if large != nil {
			copyBufs.Put(large)
		}
	}()
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		switch {
		case large == nil && n == len(buf):
			large = copyBufs.Get().(*[]byte)
			buf = *large
		case large != nil && n < smallCopyBuf:
			copyBufs.Put(large)
			large, buf = nil, small
		}
	}
}

func finish(dst, src net.Conn, err error) {
	if err != nil {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	if hc, ok := dst.(halfCloser); ok {
		_ = hc.CloseWrite()
		return
	}
	_ = dst.Close()
}
