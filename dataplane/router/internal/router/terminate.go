package router

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/pires/go-proxyproto"

	"tfgateway.dev/dataplane/router/internal/acme"
	"tfgateway.dev/dataplane/router/internal/handoff"
	"tfgateway.dev/dataplane/router/internal/routes"
	"tfgateway.dev/dataplane/router/internal/sniff"
	"tfgateway.dev/dataplane/router/internal/tlsterm"
	"tfgateway.dev/dataplane/router/internal/tunnel"
)

// Error kinds of terminated routes.
const (
	kindNoTLS     = "tls_not_configured"
	kindHandshake = "tls_handshake"
	kindNoCert    = "no_certificate"
)

// terminator is what the router needs for routes that ask for TLS termination.
type terminator struct {
	certs   *acme.Manager
	httpCfg *tls.Config // decrypted HTTP: ALPN h2 and http/1.1
	tcpCfg  *tls.Config // decrypted bytes: no ALPN
	proxy   *tlsterm.HTTPProxy
	local   *handoff.Listener // the router's own port-80 answers: HTTP-01, redirects
	localS  *http.Server
}

// startTLS starts the router's own port-80 answers and, when router.toml has a [tls]
// table, what terminated routes need: certificates and the HTTP proxy.
func (r *Router) startTLS() error {
	x := &terminator{local: handoff.NewListener(&net.TCPAddr{})}
	errLog := slog.NewLogLogger(r.log.Handler(), slog.LevelDebug)
	x.localS = &http.Server{Handler: http.HandlerFunc(r.answerHTTP), ReadHeaderTimeout: r.opt.PeekTimeout,
		MaxHeaderBytes: r.opt.HeaderLimit, ErrorLog: errLog}
	if r.cfg.TLS != nil {
		s := r.cfg.Server
		certs, err := acme.New(acme.Options{
			TLS: r.cfg.TLS, Routed: r.terminates, Redis: r.redis,
			ListenHost: s.Addr, HTTPPort: int(s.HTTPPort), TLSPort: int(s.Port),
			Log: r.log.With("component", "tls"),
		})
		if err != nil {
			return err
		}
		if err := certs.Register(r.Metrics.Registry); err != nil {
			certs.Stop()
			return err
		}
		acmeCfg := &tls.Config{GetCertificate: certs.GetCertificate, NextProtos: []string{acmez.ACMETLS1Protocol}}
		forChallenge := func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
				return acmeCfg, nil // TLS-ALPN-01 validation: only acme-tls/1 may be negotiated
			}
			return nil, nil
		}
		x.certs = certs
		x.httpCfg = &tls.Config{GetCertificate: certs.GetCertificate, GetConfigForClient: forChallenge,
			NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
		x.tcpCfg = &tls.Config{GetCertificate: certs.GetCertificate, GetConfigForClient: forChallenge,
			MinVersion: tls.VersionTLS12}
		x.proxy = tlsterm.NewHTTPProxy(tlsterm.Options{
			MaxHeaderBytes: r.opt.HeaderLimit, ReadHeaderTimeout: r.opt.PeekTimeout, ErrorLog: errLog,
		})
		certs.Start()
	}
	go func() { _ = x.localS.Serve(x.local) }()
	r.term = x
	return nil
}

// quiesceTLS lets terminated HTTP connections end between requests (idle ones close at
// once) while the router drains.
func (r *Router) quiesceTLS() {
	ctx, cancel := context.WithTimeout(context.Background(), r.opt.ShutdownGrace)
	go func() {
		defer cancel()
		if r.term.proxy != nil {
			r.term.proxy.Shutdown(ctx)
		}
	}()
}

func (r *Router) stopTLS() {
	if r.term == nil {
		return
	}
	_ = r.term.local.Close()
	_ = r.term.localS.Close()
	if r.term.certs != nil {
		r.term.proxy.Close()
		r.term.certs.Stop()
	}
}

// terminates reports whether a route of the gateway asks for TLS termination of name
// (the static CATCH_ALL never does: it would match any name a client sends).
func (r *Router) terminates(name string) bool {
	svc, label, ok := r.Table.Lookup(name)
	return ok && label != routes.CatchAllRoute && svc.Terminate != routes.Passthrough
}

// terminated handles what termination changes: on the TLS listener the whole connection
// of a terminated route; on the HTTP listener, ACME HTTP-01 validations and redirects to
// HTTPS for routes that ask. False: route the connection as tcprouter does.
func (r *Router) terminated(listener string, c net.Conn, label string, svc routes.Service, peeked []byte) bool {
	if svc.Terminate == routes.Passthrough && !svc.Redirect {
		return false
	}
	if listener == ListenerHTTP {
		challenge := svc.Terminate != routes.Passthrough && r.term.certs != nil && isChallenge(peeked)
		if !challenge && !svc.Redirect {
			return false
		}
		hc := handoff.NewConn(c, peeked, nil)
		if r.term.local.Hand(hc) {
			<-hc.Done()
		}
		return true
	}
	if svc.Terminate == routes.Passthrough {
		return false
	}
	if r.term.certs == nil {
		r.fail(listener, label, kindNoTLS)
		r.log.Debug("route asks for TLS termination but router.toml has no [tls]", "route", label)
		return true
	}
	r.terminate(c, label, svc, peeked)
	return true
}

// isChallenge reports whether an HTTP head asks for an ACME HTTP-01 key authorization.
func isChallenge(head []byte) bool {
	line, _, _ := strings.Cut(string(head[:min(len(head), 256)]), "\n")
	method, rest, _ := strings.Cut(line, " ")
	return method == http.MethodGet && strings.HasPrefix(rest, challengePath)
}

const challengePath = "/.well-known/acme-challenge/"

// answerHTTP is the router's own port-80 handler for terminated routes.
func (r *Router) answerHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Connection", "close")
	host, err := sniff.NormaliseHost(req.Host)
	svc, label, ok := r.Table.Lookup(host)
	if r.term.certs != nil && r.term.certs.HandleHTTPChallenge(w, req) {
		r.Metrics.Connections.WithLabelValues(ListenerHTTP, label, "acme_challenge").Inc()
		return
	}
	// A validation the router did not start (or one already over) is not redirected:
	// the CA would follow to HTTPS, which has no certificate yet.
	challenge := strings.HasPrefix(req.URL.Path, challengePath) && svc.Terminate != routes.Passthrough
	if err != nil || !ok || !svc.Redirect || challenge {
		http.NotFound(w, req)
		return
	}
	target := "https://" + host
	if p := r.cfg.Server.Port; p != 443 {
		target = "https://" + net.JoinHostPort(host, strconv.Itoa(int(p)))
	} else if strings.Contains(host, ":") {
		target = "https://[" + host + "]"
	}
	r.Metrics.Connections.WithLabelValues(ListenerHTTP, label, "redirect").Inc()
	http.Redirect(w, req, target+req.URL.RequestURI(), http.StatusPermanentRedirect)
}

// terminate answers the ClientHello with the name's certificate and forwards the
// decrypted stream: HTTP through the reverse proxy, or the bytes as they are.
func (r *Router) terminate(c net.Conn, label string, svc routes.Service, peeked []byte) {
	hc := handoff.NewConn(c, peeked, nil)
	cfg := r.term.tcpCfg
	if svc.Terminate == routes.TerminateHTTP {
		cfg = r.term.httpCfg
	}
	tc := tls.Server(hc, cfg)
	// The client has PeekTimeout to finish its handshake; GetCertificate extends the
	// deadline while the name's first certificate is being obtained (issue_wait).
	_ = c.SetDeadline(time.Now().Add(r.opt.PeekTimeout))
	if err := tc.HandshakeContext(context.Background()); err != nil {
		kind := kindHandshake
		if errors.Is(err, acme.ErrNoCertificate) {
			kind = kindNoCert
		}
		r.fail(ListenerTLS, label, kind)
		r.log.Debug("TLS handshake failed", "route", label, "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == acmez.ACMETLS1Protocol {
		r.Metrics.Connections.WithLabelValues(ListenerTLS, label, "acme_challenge").Inc()
		return // a TLS-ALPN-01 validation ends with the handshake
	}
	dial := func(ctx context.Context) (net.Conn, error) { return r.dialBackend(ctx, c, label, svc) }
	if svc.Terminate == routes.TerminateHTTP {
		// Backends are dialled per request; a failure is counted there and answered 502.
		r.Metrics.Connections.WithLabelValues(ListenerTLS, label, "ok").Inc()
		name := strings.ToLower(strings.TrimSuffix(tc.ConnectionState().ServerName, "."))
		r.term.proxy.Serve(tc, &tlsterm.Route{Name: name, Dial: dial})
	} else if b, err := dial(context.Background()); err == nil {
		r.Metrics.Connections.WithLabelValues(ListenerTLS, label, "ok").Inc()
		pipe(tc, b)
		_ = b.Close()
	}
	in, out := hc.Bytes()
	r.Metrics.Bytes.WithLabelValues(ListenerTLS, label, "in").Add(float64(in))
	r.Metrics.Bytes.WithLabelValues(ListenerTLS, label, "out").Add(float64(out))
}

// dialBackend connects a terminated route to its backend's plain side: the route's
// httpport, or a stream of its tunnel (the tunnel client sees no TLS and picks its
// --local target), with the PROXY protocol header first when the route asks for it.
func (r *Router) dialBackend(ctx context.Context, client net.Conn, label string, svc routes.Service) (net.Conn, error) {
	var b net.Conn
	var err error
	if svc.IsTunnel() {
		var st *tunnel.Stream
		if st, err = r.openStream(ListenerTLS, label, svc); err == nil {
			b = st
			// Decrypted bytes stay inside the tunnel's TLS session: never on a data
			// connection, which carries only bytes as they came from the Internet.
			if st.Session.DataConns() {
				_ = st.SetWriteDeadline(time.Now().Add(r.opt.DialTimeout))
				_, err = st.Write([]byte{tunnel.StreamInline})
				_ = st.SetWriteDeadline(time.Time{})
				if err != nil {
					_ = st.Close()
					r.fail(ListenerTLS, label, kindWrite)
					return nil, err
				}
			}
		}
	} else {
		b, err = r.dialDirect(ListenerTLS, label, svc, svc.HTTPPort)
	}
	if err != nil {
		return nil, err
	}
	if svc.ProxyProtocol != 0 {
		_ = b.SetWriteDeadline(time.Now().Add(r.opt.DialTimeout))
		if _, err := b.Write(proxyHeader(svc.ProxyProtocol, client)); err != nil {
			_ = b.Close()
			r.fail(ListenerTLS, label, kindWrite)
			return nil, err
		}
		_ = b.SetWriteDeadline(time.Time{})
	}
	if err := ctx.Err(); err != nil {
		_ = b.Close()
		return nil, err
	}
	return b, nil
}

// proxyHeader is the PROXY protocol header (version 1 or 2) that tells the backend the
// client's address and the gateway address it connected to.
func proxyHeader(version uint8, client net.Conn) []byte {
	h := proxyproto.HeaderProxyFromAddrs(version, client.RemoteAddr(), client.LocalAddr())
	b, _ := h.Format() // addresses of TCP connections always format
	return b
}
