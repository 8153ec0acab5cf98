// Package tlsterm serves the decrypted side of terminated TLS connections that carry HTTP:
// one net/http server (HTTP/1.1 and HTTP/2 towards clients, keep-alive, websocket
// upgrades) whose handler is the standard library's reverse proxy, forwarding each
// request to the connection's route with X-Forwarded-For, -Proto and -Host set (what the
// client sent in those headers is dropped).
package tlsterm

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"tfgateway.dev/dataplane/router/internal/handoff"
	"tfgateway.dev/dataplane/router/internal/sniff"
)

// Route is where one terminated connection's requests go.
type Route struct {
	// Name is the name the connection was terminated for (the TLS server name).
	Name string
	// Dial opens a connection to the backend: a TCP connection or a tunnel stream, with
	// the PROXY protocol header written when the route asks for it. Each client
	// connection gets its own backend connections, so that header is always true.
	Dial func(ctx context.Context) (net.Conn, error)

	proxy     *httputil.ReverseProxy
	transport *http.Transport
}

// Options tune the HTTP side; zero values take the defaults.
type Options struct {
	MaxHeaderBytes    int           // request head limit (the router's peek limit)
	ReadHeaderTimeout time.Duration // time to send a request head
	IdleTimeout       time.Duration // keep-alive between requests
	// ErrorLog gets net/http's per-connection complaints (at debug level: never a line per
	// client at the default level).
	ErrorLog *log.Logger
}

// HTTPProxy is the server for terminated HTTP connections.
type HTTPProxy struct {
	srv  *http.Server
	ln   *handoff.Listener
	done chan struct{}
}

type routeKey struct{}

// NewHTTPProxy starts the server; Close stops it.
func NewHTTPProxy(opt Options) *HTTPProxy {
	if opt.ReadHeaderTimeout == 0 {
		opt.ReadHeaderTimeout = 10 * time.Second
	}
	if opt.IdleTimeout == 0 {
		opt.IdleTimeout = 2 * time.Minute
	}
	p := &HTTPProxy{ln: handoff.NewListener(&net.TCPAddr{}), done: make(chan struct{})}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(serveRequest),
		MaxHeaderBytes:    opt.MaxHeaderBytes,
		ReadHeaderTimeout: opt.ReadHeaderTimeout,
		IdleTimeout:       opt.IdleTimeout,
		ErrorLog:          opt.ErrorLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				if hc, ok := tc.NetConn().(*handoff.Conn); ok {
					return context.WithValue(ctx, routeKey{}, hc.Value)
				}
			}
			return ctx
		},
	}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(p.ln)
	}()
	return p
}

// Serve gives tc (terminated, its handshake done, its NetConn a *handoff.Conn carrying
// rt) to the server and returns when the connection has ended.
func (p *HTTPProxy) Serve(tc *tls.Conn, rt *Route) {
	hc, ok := tc.NetConn().(*handoff.Conn)
	if !ok {
		_ = tc.Close()
		return
	}
	rt.transport = &http.Transport{
		DialContext:           func(ctx context.Context, _, _ string) (net.Conn, error) { return rt.Dial(ctx) },
		MaxIdleConnsPerHost:   4, // a tunnel stream kept idle holds one of the tunnel's slots
		IdleConnTimeout:       30 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = rt.Name
			pr.SetXForwarded()
		},
		Transport:    rt.transport,
		BufferPool:   bufferPool{},
		ErrorLog:     p.srv.ErrorLog,
		ErrorHandler: rt.backendFailed,
	}
	hc.Value = rt
	defer rt.transport.CloseIdleConnections()
	if !p.ln.Hand(tc) {
		_ = tc.Close()
		return
	}
	<-hc.Done()
}

// Shutdown closes idle connections and waits (until ctx ends) for the others to finish
// their request.
func (p *HTTPProxy) Shutdown(ctx context.Context) { _ = p.srv.Shutdown(ctx) }

// Close stops accepting; connections in progress end when their raw connection closes.
func (p *HTTPProxy) Close() {
	_ = p.ln.Close()
	<-p.done
	_ = p.srv.Close()
}

func serveRequest(w http.ResponseWriter, req *http.Request) {
	rt, ok := req.Context().Value(routeKey{}).(*Route)
	if !ok {
		http.Error(w, "tfrouter: no route", http.StatusBadGateway)
		return
	}
	// A request for another name than the one the connection was terminated for (HTTP/2
	// connection coalescing under a wildcard certificate, or a client's mistake): 421 makes
	// clients retry on a connection of its own (RFC 9110 §15.5.20).
	if host, _ := sniff.NormaliseHost(req.Host); host != "" && host != rt.Name {
		http.Error(w, "tfrouter: this connection serves "+rt.Name+", not "+host, http.StatusMisdirectedRequest)
		return
	}
	rt.proxy.ServeHTTP(w, req)
}

func (rt *Route) backendFailed(w http.ResponseWriter, _ *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	http.Error(w, "tfrouter: backend unavailable", http.StatusBadGateway)
}

// bufferPool gives the reverse proxy 64 KiB copy buffers (four full TLS records).
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
