package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

// headers starts an HTTP backend that answers with the forwarding headers it saw.
func headers(t *testing.T) int {
	t.Helper()
	_, port := httpBackend(t, func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "host=%s xff=%s proto=%s xhost=%s proto-major=%d",
			req.Host, req.Header.Get("X-Forwarded-For"), req.Header.Get("X-Forwarded-Proto"),
			req.Header.Get("X-Forwarded-Host"), req.ProtoMajor)
	})
	return port
}

// static is a [server.services."name"] table on 127.0.0.1:port (httpport) with more keys.
func static(name string, port int, keys ...string) string {
	return fmt.Sprintf("[server.services.%q]\naddr = \"127.0.0.1\"\nhttpport = %d\n%s", name, port,
		strings.Join(append(keys, ""), "\n"))
}

// deadACME is a [tls] table whose ACME CA is an address where nothing listens: every
// attempt fails fast.
func deadACME(t *testing.T, keys ...string) string {
	return fmt.Sprintf("[tls]\nstorage = %q\nacme_ca = \"https://127.0.0.1:%d/dir\"\n%s", t.TempDir(),
		testutil.FreePort(t), strings.Join(append(keys, ""), "\n"))
}

// tlsSection is a [tls] table with operator certificates only (no ACME).
func tlsSection(t *testing.T, certs ...[2]string) string {
	s := fmt.Sprintf("[tls]\nstorage = %q\n", t.TempDir())
	for _, c := range certs {
		s += fmt.Sprintf("[[tls.certificates]]\ncert = %q\nkey = %q\n", c[0], c[1])
	}
	return s
}

func tlsClient(ca *testutil.CA, addr, sni string, protos ...string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, RootCAs: ca.Pool, NextProtos: protos})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

// httpsGet sends one request over TLS (HTTP/1.1) with extra header lines.
func httpsGet(ca *testutil.CA, addr, sni, host, extra string) (int, string, error) {
	c, err := tlsClient(ca, addr, sni)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n", host, extra)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// A terminated route answers with the gateway's certificate for the name and forwards
// plain HTTP with X-Forwarded-* set (a client's own X-Forwarded-For is dropped); a route
// without "terminate" is passed through as before (the backend's certificate).
func TestTerminateHTTPDirect(t *testing.T) {
	rd := testutil.StartRedis(t)
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "app.example", "other.example")
	plain := headers(t)
	r := startRouter(t, rd.Port, tlsSection(t, [2]string{cert, key}), Options{TargetPolicy: allowAll})
	err := rd.Client.Set(context.Background(), "/tcprouter/service/app.example", testutil.ServiceValueJSON("app.example",
		fmt.Sprintf(`{"addr":"127.0.0.1","clientsecret":"","tlsport":1,"httpport":%d,"user":"1","terminate":"http"}`, plain)), 0).Err()
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "route pushed", func() bool { return r.Table.Len() == 1 })

	code, body, err := httpsGet(ca, r.tls(), "app.example", "app.example", "X-Forwarded-For: 6.6.6.6\r\n")
	if err != nil || code != 200 {
		t.Fatalf("got %d %q, %v", code, body, err)
	}
	if want := "host=app.example xff=127.0.0.1 proto=https xhost=app.example proto-major=1"; body != want {
		t.Fatalf("backend saw %q, want %q", body, want)
	}
	// Names compare case-insensitively (the SNI as a client spelled it).
	if code, _, err := httpsGet(ca, r.tls(), "APP.Example", "app.EXAMPLE:443", ""); err != nil || code != 200 {
		t.Fatalf("mixed-case SNI and Host: %d, %v", code, err)
	}
	// A request for another name on this connection (coalescing under a shared
	// certificate) is refused with 421, never sent to this route's backend.
	if code, _, err := httpsGet(ca, r.tls(), "app.example", "other.example", ""); err != nil || code != http.StatusMisdirectedRequest {
		t.Fatalf("other Host: %d, %v; want 421", code, err)
	}
	// HTTP/2 towards the client, HTTP/1.1 towards the backend.
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "app.example"},
		DialTLSContext: func(ctx context.Context, _, _ string, cfg *tls.Config) (net.Conn, error) {
			return (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", r.tls())
		}}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://app.example/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.Contains(string(b), "proto=https") || !strings.Contains(string(b), "proto-major=1") {
		t.Fatalf("h2: proto %d, body %q", resp.ProtoMajor, b)
	}
	// Bulk through the terminated path.
	c, err := tlsClient(ca, r.tls(), "app.example")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	c.Close()
	if n != int64(len(bigBody)) {
		t.Fatalf("big body: %d bytes", n)
	}
	if v := promtest.ToFloat64(r.Metrics.Connections.WithLabelValues(ListenerTLS, "app.example", "ok")); v != 5 {
		t.Errorf("terminated connections counted %v, want 5", v)
	}
}

// Raw TCP termination and termination through a tunnel (the tunnel client sees no TLS and
// uses its plain --local target).
func TestTerminateTCPAndTunnel(t *testing.T) {
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "raw.example", "tun.example")
	plain := headers(t)
	r := startRouter(t, 0, static("raw.example", readAllServer(t), `terminate = "tcp"`)+
		"[server.services.\"tun.example\"]\nclientsecret = \"7:tun\"\nterminate = \"http\"\n"+
		tlsSection(t, [2]string{cert, key}), Options{})
	c, err := tlsClient(ca, r.tls(), "raw.example")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "ping")
	_ = c.CloseWrite()
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(b) != "read 4 bytes" {
		t.Fatalf("raw: %q, %v", b, err)
	}

	trc(t, "7:tun", r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", plain), "127.0.0.1:1")
	testutil.WaitFor(t, 10*time.Second, "tunnel registered", func() bool { return r.Registry.Len() == 1 })
	code, body, err := httpsGet(ca, r.tls(), "tun.example", "tun.example", "")
	if err != nil || code != 200 || body != "host=tun.example xff=127.0.0.1 proto=https xhost=tun.example proto-major=1" {
		t.Fatalf("tunnel: %d %q, %v", code, body, err)
	}
}

// proxyBackend accepts connections that start with a PROXY header and reports the header's
// source address and the first line after it.
func proxyBackend(t *testing.T) (int, <-chan string) {
	t.Helper()
	seen := make(chan string, 16)
	port := tcpBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			seen <- "no header: " + err.Error()
			return
		}
		_, _ = br.Peek(1) // what follows the header, as far as it came in
		rest, _ := br.Peek(br.Buffered())
		line, _, _ := strings.Cut(string(rest), "\r\n")
		seen <- fmt.Sprintf("v%d %s %s", h.Version, h.SourceAddr, line)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	return port, seen
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the backend saw no connection")
		return ""
	}
}

// The PROXY protocol header goes first, opt-in per route, on passthrough and terminated
// connections alike; a route without it gets none.
func TestProxyProtocol(t *testing.T) {
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "term.example", "tun-term.example")
	port, seen := proxyBackend(t)
	r := startRouter(t, 0, static("pass.example", port, "proxyprotocol = 2")+
		static("v1.example", port, "proxyprotocol = 1")+
		static("term.example", port, `terminate = "http"`, "proxyprotocol = 2")+
		static("none.example", readAllServer(t))+
		"[server.services.\"tun-pp.example\"]\nclientsecret = \"8:pp\"\nproxyprotocol = 2\n"+
		"[server.services.\"tun-term.example\"]\nclientsecret = \"8:pp\"\nproxyprotocol = 2\nterminate = \"http\"\n"+
		tlsSection(t, [2]string{cert, key}), Options{})

	client, err := net.Dial("tcp", r.http())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(client, "GET / HTTP/1.1\r\nHost: pass.example\r\n\r\n")
	want := fmt.Sprintf("v2 %s GET / HTTP/1.1", client.LocalAddr())
	if got := recv(t, seen); got != want {
		t.Fatalf("passthrough: %q, want %q", got, want)
	}
	client.Close()
	client, _ = net.Dial("tcp", r.http())
	fmt.Fprint(client, "GET / HTTP/1.1\r\nHost: v1.example\r\n\r\n")
	if got, want := recv(t, seen), fmt.Sprintf("v1 %s GET / HTTP/1.1", client.LocalAddr()); got != want {
		t.Fatalf("v1: %q, want %q", got, want)
	}
	client.Close()

	tc, err := tlsClient(ca, r.tls(), "term.example")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(tc, "GET /x HTTP/1.1\r\nHost: term.example\r\n\r\n")
	if got, want := recv(t, seen), fmt.Sprintf("v2 %s GET /x HTTP/1.1", tc.LocalAddr()); got != want {
		t.Fatalf("terminated: %q, want %q", got, want)
	}
	tc.Close()

	// Through a tunnel: tftunnel looks past the header to pick --local-tls for TLS and
	// --local for the rest, and passes the header on.
	tlsPort, seenTLS := proxyBackend(t)
	trc(t, "8:pp", r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", tlsPort))
	testutil.WaitFor(t, 10*time.Second, "tunnel registered", func() bool { return r.Registry.Len() == 1 })
	client, _ = net.Dial("tcp", r.http())
	fmt.Fprint(client, "GET /t HTTP/1.1\r\nHost: tun-pp.example\r\n\r\n")
	if got, want := recv(t, seen), fmt.Sprintf("v2 %s GET /t HTTP/1.1", client.LocalAddr()); got != want {
		t.Fatalf("tunnel, plain: %q, want %q", got, want)
	}
	client.Close()
	client, _ = net.Dial("tcp", r.tls())
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _ = tls.Client(client, &tls.Config{ServerName: "tun-pp.example"}).Handshake() }()
	if got, want := recv(t, seenTLS), fmt.Sprintf("v2 %s ", client.LocalAddr()); !strings.HasPrefix(got, want) {
		t.Fatalf("tunnel, TLS: %q, want %q...", got, want)
	}
	client.Close()

	// terminated, through the tunnel: the header, then the decrypted request, to --local
	tc, err = tlsClient(ca, r.tls(), "tun-term.example")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(tc, "GET /tt HTTP/1.1\r\nHost: tun-term.example\r\n\r\n")
	if got, want := recv(t, seen), fmt.Sprintf("v2 %s GET /tt HTTP/1.1", tc.LocalAddr()); got != want {
		t.Fatalf("terminated through the tunnel: %q, want %q", got, want)
	}
	tc.Close()

	// no header for a route that does not ask
	c, _ := net.Dial("tcp", r.http())
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: none.example\r\n\r\n")
	_ = c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "read 38 bytes" { // the request alone, no header before it
		t.Fatalf("route without proxyprotocol got %q", b)
	}
}

// Port 80 of a route that asks for it answers with a redirect to HTTPS (path and query
// kept); ACME validation paths of terminated routes are answered by the router, those of
// other routes still reach the backend (users running their own ACME client).
func TestRedirectAndChallengePaths(t *testing.T) {
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "r.example")
	_, plain := named(t, "backend")
	r := startRouter(t, 0, static("r.example", plain, `terminate = "http"`, "redirect = true")+
		static("t.example", plain, `terminate = "http"`)+static("p.example", plain)+
		tlsSection(t, [2]string{cert, key}), Options{})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(host, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.http()+path, nil)
		req.Host = host
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	_, tlsPort, _ := net.SplitHostPort(r.tls())
	resp, _ := get("r.example", "/a/b?c=d")
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://r.example:"+tlsPort+"/a/b?c=d" {
		t.Fatalf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get("r.example", "/.well-known/acme-challenge/abc"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("challenge path of a terminated route: %d, want the router's 404 (no validation pending)", resp.StatusCode)
	}
	if _, body := get("t.example", "/"); body != "backend t.example " {
		t.Fatalf("terminated route without redirect, plain HTTP: %q", body)
	}
	if _, body := get("p.example", "/.well-known/acme-challenge/abc"); body != "backend p.example " {
		t.Fatalf("passthrough route's challenge path: %q", body)
	}
}

// Without [tls] a terminated route is refused (counted), never passed to the plain port as
// if it were TLS.
func TestTerminateWithoutTLSConfig(t *testing.T) {
	_, plain := named(t, "backend")
	r := startRouter(t, 0, static("x.example", plain, `terminate = "http"`), Options{})
	_, err := tlsClient(testutil.NewCA(t), r.tls(), "x.example")
	if err == nil {
		t.Fatal("handshake succeeded without a certificate")
	}
	if v := promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerTLS, "x.example", kindNoTLS)); v != 1 {
		t.Fatalf("%s = %v", kindNoTLS, v)
	}
}

// A certificate is attempted only for names a route terminates, once per back-off, and
// within the global rate: hostile SNI values never reach the ACME CA. The CA here is an
// address where nothing listens, so every attempt fails fast.
func TestIssuanceOnlyForRoutedNames(t *testing.T) {
	ca := testutil.NewCA(t)
	_, plain := named(t, "backend")
	term := `terminate = "http"`
	r := startRouter(t, 0, static("a.example", plain, term)+static("b.example", plain, term)+
		static("CATCH_ALL", plain, term)+deadACME(t, "issue_rate = 1", `retry_min = "1h"`), Options{})
	decisions := func(result string) float64 {
		return promtest.ToFloat64(r.term.certs.Metrics().Decisions.WithLabelValues(result))
	}
	var wg sync.WaitGroup
	for range 5 { // concurrent handshakes share one attempt
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = tlsClient(ca, r.tls(), "a.example") }()
	}
	wg.Wait()
	if decisions("failed") != 1 {
		t.Fatalf("failed attempts = %v, want 1", decisions("failed"))
	}
	if _, err := tlsClient(ca, r.tls(), "a.example"); err == nil {
		t.Fatal("handshake without a certificate succeeded")
	}
	if decisions("backoff") < 1 || decisions("failed") != 1 {
		t.Fatalf("second handshake: backoff %v, failed %v", decisions("backoff"), decisions("failed"))
	}
	// the hourly budget (1) is spent: b.example waits for it
	_, _ = tlsClient(ca, r.tls(), "b.example")
	if decisions("rate_limited") != 1 {
		t.Fatalf("rate_limited = %v", decisions("rate_limited"))
	}
	// names no route terminates (only CATCH_ALL would match them) never get an attempt
	for _, sni := range []string{"evil.example", "x.a.example", "localhost"} {
		_, _ = tlsClient(ca, r.tls(), sni)
	}
	if decisions("not_routed") != 3 || decisions("failed") != 1 {
		t.Fatalf("not_routed %v, failed %v", decisions("not_routed"), decisions("failed"))
	}
}

// The Internet sending ClientHellos with whatever names it likes, to a router whose
// CATCH_ALL terminates TLS: no attempt to obtain a certificate, no log line per handshake,
// memory back where it was, and a routed name still served by its operator certificate.
func TestHostileServerNames(t *testing.T) {
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "ok.example")
	_, plain := named(t, "backend")
	var logs testutil.SyncBuffer
	term := `terminate = "http"`
	r := startRouter(t, 0, static("ok.example", plain, term)+static("CATCH_ALL", plain, term)+
		deadACME(t, "[[tls.certificates]]", fmt.Sprintf("cert = %q\nkey = %q", cert, key)),
		Options{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	const n = 3000
	var wg sync.WaitGroup
	names := make(chan string, n)
	for i := range n {
		names <- fmt.Sprintf("x%d-%d.victim.example", i, rand.Int())
	}
	close(names)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sni := range names {
				// tlsClient's 3 s cover the handshake: under -race and a loaded machine a
				// client may give up before the router decided (then perhaps never sent
				// its ClientHello); it tries again, so every name is decided at least once.
				for try := 0; ; try++ {
					c, err := tlsClient(ca, r.tls(), sni)
					if err == nil {
						c.Close()
						t.Errorf("handshake for %s succeeded", sni)
					}
					var ne net.Error
					if !errors.As(err, &ne) || !ne.Timeout() || try == 5 {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	m := r.term.certs.Metrics()
	// Counted as the router refuses each name; a ClientHello whose client gave up is
	// decided when the router reaches it.
	testutil.WaitFor(t, 30*time.Second, "every name refused as not routed", func() bool {
		return promtest.ToFloat64(m.Decisions.WithLabelValues("not_routed")) >= n
	})
	if v := promtest.ToFloat64(m.Decisions.WithLabelValues("failed")); v != 0 {
		t.Fatalf("%v attempts for names no route terminates", v)
	}
	if strings.Contains(logs.String(), "victim") {
		t.Fatalf("hostile names logged:\n%s", logs.String())
	}
	if after := heap(); after > before+8<<20 {
		t.Fatalf("heap grew from %d to %d bytes", before, after)
	}
	code, body, err := httpsGet(ca, r.tls(), "ok.example", "ok.example", "")
	if err != nil || code != 200 || body != "backend ok.example " {
		t.Fatalf("routed name after the flood: %d %q %v", code, body, err)
	}
}
