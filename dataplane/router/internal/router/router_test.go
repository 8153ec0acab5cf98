package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"tfgateway.dev/dataplane/router/internal/config"
	"tfgateway.dev/dataplane/router/internal/testutil"
)

func setRoute(t *testing.T, rd *testutil.Redis, host, addr, secret string, tlsPort, httpPort int) {
	t.Helper()
	err := rd.Client.Set(context.Background(), "/tcprouter/service/"+host,
		testutil.ServiceValue(host, addr, secret, tlsPort, httpPort), 0).Err()
	if err != nil {
		t.Fatal(err)
	}
}

func TestHTTPRouting(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, pStatic := named(t, "static")
	_, pRedis := named(t, "redis")
	_, pCatch := named(t, "catchall")
	r := startRouter(t, rd.Port, fmt.Sprintf(`
[server.services."Static.Example"]
addr = "127.0.0.1"
httpport = %d
[server.services."CATCH_ALL"]
addr = "127.0.0.1"
httpport = %d
`, pStatic, pCatch), Options{TargetPolicy: allowAll})
	setRoute(t, rd, "www.example.com", "127.0.0.1", "", 0, pRedis)
	testutil.WaitFor(t, 5*time.Second, "route pushed", func() bool { return r.Table.Len() == 1 })

	for host, want := range map[string]string{
		"static.example":       "static static.example ",
		"WWW.Example.com:8080": "redis WWW.Example.com:8080 ",
		"unknown.example":      "catchall unknown.example ",
	} {
		got, err := get(r.http(), host)
		if err != nil || got != want {
			t.Errorf("Host %s: got %q, %v; want %q", host, got, err, want)
		}
	}
	// the header name is matched case-insensitively
	c, _ := net.Dial("tcp", r.http())
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nhOST:www.example.com\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(b), "redis www.example.com") {
		t.Errorf("lower-case host header: %q", b)
	}
	if v := promtest.ToFloat64(r.Metrics.Connections.WithLabelValues(ListenerHTTP, "www.example.com", "ok")); v != 2 {
		t.Errorf("connections metric for www.example.com = %v, want 2", v)
	}
	if v := promtest.ToFloat64(r.Metrics.Connections.WithLabelValues(ListenerHTTP, "CATCH_ALL", "ok")); v != 1 {
		t.Errorf("unknown hosts must be counted under CATCH_ALL, got %v", v)
	}
}

func TestUnknownHostClosed(t *testing.T) {
	r := startRouter(t, 0, "", Options{})
	c, err := net.Dial("tcp", r.http())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n")
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("connection for an unknown host not closed")
	}
	if v := promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, NoRoute, kindNoRoute)); v != 1 {
		t.Fatalf("no_route errors = %v", v)
	}
}

func TestTLSPassthroughBySNI(t *testing.T) {
	rd := testutil.StartRedis(t)
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "tls backend saw SNI %s", req.TLS.ServerName)
	}))
	defer backend.Close()
	bport := backend.Listener.Addr().(*net.TCPAddr).Port
	r := startRouter(t, rd.Port, "", Options{TargetPolicy: allowAll})
	setRoute(t, rd, "secure.example", "127.0.0.1", "", bport, 0)
	testutil.WaitFor(t, 5*time.Second, "route pushed", func() bool { return r.Table.Len() == 1 })
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "Secure.Example"}, //nolint:gosec // test backend
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", r.tls())
		},
	}}
	resp, err := client.Get("https://secure.example/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// the backend completed the handshake itself: the router did not terminate TLS
	if string(body) != "tls backend saw SNI Secure.Example" {
		t.Fatalf("body %q", body)
	}
}

func TestSlowAndOversizedClientsClosed(t *testing.T) {
	r := startRouter(t, 0, "", Options{PeekTimeout: 300 * time.Millisecond, HeaderLimit: 1024})
	for _, tc := range []struct {
		name, addr string
		send       []byte
	}{
		{"http slowloris", r.http(), []byte("GET / HTTP/1.1\r\nHost: a")},
		{"http silent", r.http(), nil},
		{"tls slowloris", r.tls(), []byte{0x16, 3, 1, 0x02, 0x00, 1}},
		{"http oversized", r.http(), []byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 4000))},
		{"tls oversized", r.tls(), append([]byte{0x16, 3, 1, 0x3f, 0xff, 1, 0, 0x3f, 0xfb}, make([]byte, 2000)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write(tc.send)
			if !closedWithin(c, 5*time.Second) {
				t.Fatal("client not disconnected")
			}
		})
	}
	if v := promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, NoRoute, kindPeekTimeout)); v != 2 {
		t.Errorf("http peek timeouts = %v, want 2", v)
	}
	if v := promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, NoRoute, kindPeekTooBig)); v != 1 {
		t.Errorf("http oversized = %v, want 1", v)
	}
}

// A backend that answers only after the client half-closes: the FIN must be passed on.
func TestHalfClosePropagated(t *testing.T) {
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"h.example\"]\naddr = \"127.0.0.1\"\nhttpport = %d\n",
		readAllServer(t)), Options{})
	c, err := net.Dial("tcp", r.http())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST / HTTP/1.1\r\nHost: h.example\r\n\r\nbody"
	fmt.Fprint(c, req)
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != fmt.Sprintf("read %d bytes", len(req)) {
		t.Fatalf("got %q, %v", b, err)
	}
}

func TestRedisLoopbackTargetRefused(t *testing.T) {
	rd := testutil.StartRedis(t)
	var hits atomic.Int64
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			c.Close()
		}
	}()
	r := startRouter(t, rd.Port, "", Options{}) // production policy
	setRoute(t, rd, "evil.example", "127.0.0.1", "", 0, l.Addr().(*net.TCPAddr).Port)
	setRoute(t, rd, "ok.example", "10.255.255.1", "", 0, 80) // never dialled below
	testutil.WaitFor(t, 5*time.Second, "ok route", func() bool { _, _, ok := r.Table.Lookup("ok.example"); return ok })
	c, _ := net.Dial("tcp", r.http())
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.0\r\nHost: evil.example\r\n\r\n")
	if !closedWithin(c, 5*time.Second) || hits.Load() != 0 {
		t.Fatal("router dialled a loopback target taken from redis")
	}
}

func cmdstat(t *testing.T, rd *testutil.Redis, cmd string) int {
	info := rd.Client.Info(context.Background(), "commandstats").Val()
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}

func TestNoRedisTrafficPerConnection(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, p := named(t, "b")
	r := startRouter(t, rd.Port, "", Options{TargetPolicy: allowAll})
	setRoute(t, rd, "x.example", "127.0.0.1", "", 0, p)
	testutil.WaitFor(t, 5*time.Second, "route", func() bool { return r.Table.Len() == 1 })
	before := cmdstat(t, rd, "get") + cmdstat(t, rd, "mget")
	for range 30 {
		if _, err := get(r.http(), "x.example"); err != nil {
			t.Fatal(err)
		}
		if _, err := get(r.http(), "miss.example"); err == nil {
			t.Fatal("miss served")
		}
	}
	// resyncs run every second (refresh = 1) and do one MGET each; allow for a few
	if after := cmdstat(t, rd, "get") + cmdstat(t, rd, "mget"); after-before > 5 {
		t.Fatalf("%d redis reads for 60 connections", after-before)
	}
}

type flakyListener struct {
	net.Listener
	fails atomic.Int64
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		errno := syscall.EMFILE
		if f.fails.Load()%2 == 0 {
			errno = syscall.ECONNABORTED
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errno}
	}
	return f.Listener.Accept()
}

func TestAcceptLoopSurvivesTransientErrors(t *testing.T) {
	r := startRouter(t, 0, "", Options{})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	fl := &flakyListener{Listener: l}
	fl.fails.Store(8)
	served := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.acceptLoop(ctx, "test", fl, func(c net.Conn) { c.Close(); served <- struct{}{} })
		close(done)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("accept loop gave up after EMFILE/ECONNABORTED")
	}
	if v := promtest.ToFloat64(r.Metrics.AcceptErrors.WithLabelValues("test")); v != 8 {
		t.Fatalf("accept errors = %v, want 8", v)
	}
	cancel()
	l.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("accept loop did not stop on a closed listener")
	}
}

func TestGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = c.Read(make([]byte, 100))
		<-release
		fmt.Fprint(c, "late answer")
		c.Close()
	}()
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"s.example\"]\naddr = \"127.0.0.1\"\nhttpport = %d\n",
		l.Addr().(*net.TCPAddr).Port), Options{ShutdownGrace: 10 * time.Second})
	c, _ := net.Dial("tcp", r.http())
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.0\r\nHost: s.example\r\n\r\n")
	testutil.WaitFor(t, 5*time.Second, "connection proxied", func() bool {
		return promtest.ToFloat64(r.Metrics.Active.WithLabelValues(ListenerHTTP)) == 1
	})
	r.cancel()
	testutil.WaitFor(t, 5*time.Second, "listener closed", func() bool {
		c2, err := net.Dial("tcp", r.http())
		if err == nil {
			c2.Close()
		}
		return err != nil
	})
	select {
	case <-r.done:
		t.Fatal("shutdown did not wait for the live connection")
	default:
	}
	close(release)
	b, _ := io.ReadAll(c)
	if string(b) != "late answer" {
		t.Fatalf("live connection cut during shutdown: %q", b)
	}
	c.Close()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatal(err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("router did not stop after the last connection")
	}
}

func TestListenErrorTyped(t *testing.T) {
	busy, _ := net.Listen("tcp", "127.0.0.1:0")
	defer busy.Close()
	r := startRouter(t, 0, "", Options{}) // a running one, to copy a valid config
	cfg := *r.cfg
	cfg.Server.HTTPPort = uint16(busy.Addr().(*net.TCPAddr).Port)
	cfg.Server.Port = uint16(testutil.FreePort(t))
	cfg.Server.ClientsPort = uint16(testutil.FreePort(t))
	err := New(&cfg, Options{}).Run(context.Background())
	var le *ListenError
	if !errors.As(err, &le) || le.Listener != ListenerHTTP {
		t.Fatalf("err = %v, want *ListenError for http", err)
	}
}

// trs cannot AUTH to redis; tfrouter uses [server.dbbackend] password.
func TestRedisPassword(t *testing.T) {
	rd := testutil.StartRedisWithPassword(t, "s3cret")
	_, p := named(t, "auth")
	text := fmt.Sprintf("[server]\naddr = \"127.0.0.1\"\nport = %d\nhttpport = %d\nclientsport = %d\n"+
		"[server.dbbackend]\ntype = \"redis\"\naddr = \"127.0.0.1\"\nport = %d\npassword = \"s3cret\"\n",
		testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t), rd.Port)
	cfg, err := config.Parse("auth", text)
	if err != nil {
		t.Fatal(err)
	}
	r := New(cfg, Options{TargetPolicy: allowAll, Log: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	setRoute(t, rd, "auth.example", "127.0.0.1", "", 0, p)
	testutil.WaitFor(t, 10*time.Second, "request via an authenticated redis feed", func() bool {
		got, err := get(r.Addr(ListenerHTTP).String(), "auth.example")
		return err == nil && strings.HasPrefix(got, "auth ")
	})
}

// A redis that wants a password the router does not have (or refuses the one it has) stops
// the router at start with a message naming the cause, instead of serving without routes.
func TestRedisPasswordRefused(t *testing.T) {
	rd := testutil.StartRedisWithPassword(t, "s3cret")
	for name, tc := range map[string]struct {
		extra       string
		hasPassword bool
		want        string
	}{
		"none":  {"", false, "wants a password and none is configured"},
		"wrong": {"password = \"nope\"\n", true, "refuses the configured password"},
	} {
		text := fmt.Sprintf("[server]\naddr = \"127.0.0.1\"\nport = %d\nhttpport = %d\nclientsport = %d\n"+
			"[server.dbbackend]\ntype = \"redis\"\naddr = \"127.0.0.1\"\nport = %d\n%s",
			testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t), rd.Port, tc.extra)
		cfg, err := config.Parse(name, text)
		if err != nil {
			t.Fatal(err)
		}
		r := New(cfg, Options{TargetPolicy: allowAll, Log: slog.New(slog.DiscardHandler)})
		done := make(chan error, 1)
		go func() { done <- r.Run(context.Background()) }()
		select {
		case err := <-done:
			var ae *AuthError
			if !errors.As(err, &ae) || ae.HasPassword != tc.hasPassword || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: Run = %v, want an *AuthError saying %q", name, err, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the router kept running against a redis that refuses it", name)
		}
	}
}

// A backend whose accept queue is full never completes the TCP handshake: the dial must
// give up after DialTimeout and close the client, not hang (trs has no dial timeout).
func TestBackendDialTimeout(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	port := sa.(*syscall.SockaddrInet4).Port
	// fill the accept queue (nobody accepts)
	var fillers []net.Conn
	defer func() {
		for _, c := range fillers {
			c.Close()
		}
	}()
	for range 4 {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err != nil {
			break
		}
		fillers = append(fillers, c)
	}
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"slow.example\"]\naddr = \"127.0.0.1\"\nhttpport = %d\n", port),
		Options{DialTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", r.http())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprint(c, "GET / HTTP/1.0\r\nHost: slow.example\r\n\r\n")
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("client not closed after the backend dial timed out")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v; DialTimeout is 300ms", d)
	}
	if v := promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, "slow.example", kindDial)); v != 1 {
		t.Fatalf("dial errors = %v", v)
	}
}

// Routes already in redis are served from the very first connection: Run accepts only once
// the first resync has loaded them.
func TestRoutesLoadedBeforeServing(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, p := named(t, "early")
	setRoute(t, rd, "early.example", "127.0.0.1", "", 0, p)
	r := startRouter(t, rd.Port, "", Options{TargetPolicy: allowAll})
	if got, err := get(r.http(), "early.example"); err != nil || !strings.HasPrefix(got, "early ") {
		t.Fatalf("first request after Ready: %q, %v", got, err)
	}
}

// Clients still sending their head are bounded: beyond MaxPending new ones are closed at
// once while the earlier ones keep their slot until their own deadline.
func TestPendingLimit(t *testing.T) {
	r := startRouter(t, 0, "", Options{MaxPending: 2, PeekTimeout: 5 * time.Second})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", r.http())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET / HTTP/1.1\r\n")
		held = append(held, c)
	}
	testutil.WaitFor(t, 5*time.Second, "two clients pending", func() bool { return len(r.pending) == 2 })
	if !refusedAtOnce(t, net.Dialer{}, r.tls()) {
		t.Fatal("client over the pending limit not closed at once")
	}
	if closedWithin(held[0], 100*time.Millisecond) {
		t.Fatal("a pending client was dropped instead of the new one")
	}
	if v := promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerTLS, NoRoute, kindOverload)); v != 1 {
		t.Fatalf("overload errors = %v", v)
	}
}
