package router

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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
		r.toTunnel(listener, c, host, label, svc, peeked)
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

func (r *Router) toTunnel(listener string, c net.Conn, host, label string, svc routes.Service, peeked []byte) {
	tname := tunnel.Label(svc.ClientSecret)
	st, err := r.openStream(listener, label, svc)
	if err != nil {
		return
	}
	defer st.Close()
	// The route may have ended (or passed to another secret) while the stream opened, before
	// RevokeRoute could see the stream: the route table says so now, since it changes before
	// routes are revoked.
	if now, _, ok := r.Table.Lookup(host); !ok || now.ClientSecret != svc.ClientSecret {
		r.fail(listener, label, kindTunnel)
		r.Metrics.TunnelStreams.WithLabelValues(tname, "route_gone").Inc()
		return
	}
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
			// A data connection lives no longer than its tunnel or its route: when the session
			// ends (the client died or was replaced) or the route is revoked, so do its
			// connections, as its streams would.
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-st.Session.Done():
					_ = c.Close()
					_ = dc.Conn.Close()
				case <-st.Revoked():
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
	r.Metrics.DataConns.WithLabelValues(tunnel.DataOK).Inc()
	return dc, true
}

// openStream opens a stream of the route's tunnel; a failure is counted and logged here.
func (r *Router) openStream(listener, label string, svc routes.Service) (*tunnel.Stream, error) {
	st, err := r.Registry.OpenFor(svc.ClientSecret, label)
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
	return copyAdaptive(dst, src, lazyReader(src))
}

// Copy buffers for tunnel streams (and terminated connections): a direction takes a small
// pooled buffer for a read and a large one while its reads fill the buffer (a bulk transfer:
// fewer, larger yamux frames and fewer hand-offs to the send loop, each a goroutine switch).
// Whenever the source has nothing to read the buffer goes back to the pool before the wait
// (tunnel streams and TCP connections, see lazyReader), so an idle or interactive connection
// through a tunnel holds no copy buffer at all while it waits (10,000 idle connections:
// none of 2 x 16 KiB each, where each held both for its whole life before).
const (
	smallCopyBuf = 16 << 10
	largeCopyBuf = 256 << 10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallCopyBuf); return &b }}
	copyBufs  = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}
	// buffersHeld counts the copy buffers taken from the pools and not yet given back.
	buffersHeld atomic.Int64
)

// lazyRead reads from a source into the buffer take returns, calling take only once the
// source has something to read (data, EOF or an error) and give before it waits, so no
// buffer is held while the source is idle. (0, io.EOF) is the end.
type lazyRead func(take func() []byte, give func()) (int, error)

// lazyReader returns the lazyRead of src, or nil when src cannot wait without a buffer (then
// a small buffer is held across reads, as io.Copy would).
func lazyReader(src net.Conn) lazyRead {
	switch s := src.(type) {
	case *tunnel.Stream:
		return func(take func() []byte, give func()) (int, error) {
			// go-yamux's Read with an empty buffer blocks until data, EOF or a reset, and
			// returns at once when data is there. Always waited on with no buffer: even
			// after a read that filled its buffer the stream may go idle.
			give()
			if _, err := s.Read(nil); err != nil {
				return 0, err
			}
			return s.Read(take())
		}
	case *net.TCPConn:
		rc, err := s.SyscallConn()
		if err != nil {
			return nil
		}
		return func(take func() []byte, give func()) (int, error) {
			// As net.Conn's Read does (read; on EAGAIN wait in the netpoller), with the
			// buffer given back before the wait.
			var (
				n    int
				rerr error
			)
			err := rc.Read(func(fd uintptr) bool {
				for {
					m, e := syscall.Read(int(fd), take())
					switch e {
					case syscall.EINTR:
						continue
					case syscall.EAGAIN:
						give()
						return false
					case nil:
						n = m
					default:
						rerr = e
					}
					return true
				}
			})
			switch {
			case err != nil:
				return 0, err
			case rerr != nil:
				return 0, rerr
			case n == 0:
				return 0, io.EOF
			}
			return n, nil
		}
	}
	return nil
}

// copyAdaptive is io.Copy with the buffers above; EOF from src ends it without error. With
// lazy (src's lazyRead) no buffer is held while src waits for data.
func copyAdaptive(dst io.Writer, src io.Reader, lazy lazyRead) (int64, error) {
	var (
		buf   *[]byte
		large bool // the size of buf, or of the next one taken
	)
	give := func() {
		if buf != nil {
			if len(*buf) == largeCopyBuf {
				copyBufs.Put(buf)
			} else {
				smallBufs.Put(buf)
			}
			buffersHeld.Add(-1)
			buf = nil
		}
	}
	take := func() []byte {
		if buf == nil {
			if large {
				buf = copyBufs.Get().(*[]byte)
			} else {
				buf = smallBufs.Get().(*[]byte)
			}
			buffersHeld.Add(1)
		}
		return *buf
	}
	defer give()
	var total int64
	for {
		var (
			n    int
			rerr error
		)
		if lazy != nil {
			n, rerr = lazy(take, give)
		} else {
			n, rerr = src.Read(take())
		}
		if n > 0 {
			w, werr := dst.Write((*buf)[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return total, nil
			}
			return total, rerr
		}
		switch full := n == len(*buf); {
		case !large && full: // a bulk transfer: the large buffer
			large = true
			give()
		case large && n < smallCopyBuf: // small reads again
			large = false
			give()
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
