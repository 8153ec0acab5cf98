package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"tfgateway.dev/dataplane/router/internal/config"
	"tfgateway.dev/dataplane/router/internal/testutil"
)

func allowAll(string) error { return nil }

type running struct {
	*Router
	cancel context.CancelFunc
	done   chan error
}

func (r *running) http() string    { return r.Addr(ListenerHTTP).String() }
func (r *running) tls() string     { return r.Addr(ListenerTLS).String() }
func (r *running) trcAddr() string { return r.Addr(ListenerClient).String() }

// startRouter runs a router in-process; extra is appended to a generated router.toml.
func startRouter(t *testing.T, redisPort int, extra string, opt Options) *running {
	t.Helper()
	if opt.Log == nil {
		level := slog.LevelWarn
		if os.Getenv("TFROUTER_TEST_DEBUG") != "" {
			level = slog.LevelDebug
		}
		opt.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	// Free ports are picked, then bound by the router: a test in another package (go test runs
	// packages in parallel) can take one in between, so a start that hits that race is retried.
	for attempt := 1; ; attempt++ {
		r, err := tryStartRouter(t, redisPort, extra, opt)
		if err == nil {
			return r
		}
		if !strings.Contains(err.Error(), "address already in use") || attempt == 5 {
			t.Fatalf("router did not start: %v", err)
		}
	}
}

func tryStartRouter(t *testing.T, redisPort int, extra string, opt Options) (*running, error) {
	t.Helper()
	text := fmt.Sprintf("[server]\naddr = \"127.0.0.1\"\nport = %d\nhttpport = %d\nclientsport = %d\n",
		testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t))
	if redisPort != 0 {
		text += fmt.Sprintf("[server.dbbackend]\ntype = \"redis\"\naddr = \"127.0.0.1\"\nport = %d\nrefresh = 1\n", redisPort)
	}
	cfg, err := config.Parse("test", text+extra)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{Router: New(cfg, opt), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-r.done:
		cancel()
		return nil, err
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("router not ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("router did not stop")
		}
	})
	return r, nil
}

// named starts an HTTP backend that answers with its name and the Host it saw.
func named(t *testing.T, name string) (*http.Server, int) {
	t.Helper()
	return httpBackend(t, func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		fmt.Fprintf(w, "%s %s %s", name, req.Host, body)
	})
}

// httpBackend starts an HTTP backend: /big is bigBody, the rest goes to h.
func httpBackend(t *testing.T, h http.HandlerFunc) (*http.Server, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/big" {
			_, _ = w.Write(bigBody)
			return
		}
		h(w, req)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv, l.Addr().(*net.TCPAddr).Port
}

// readAllServer starts a TCP backend that answers "read N bytes" only after the client's
// FIN, so a test sees half-closes passed on.
func readAllServer(t *testing.T) int {
	t.Helper()
	return tcpBackend(t, func(c net.Conn) {
		b, _ := io.ReadAll(c) // until the client's FIN
		fmt.Fprintf(c, "read %d bytes", len(b))
	})
}

// tcpBackend starts a TCP backend that runs serve on each connection (then closes it).
func tcpBackend(t *testing.T, serve func(net.Conn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// bigBody crosses the yamux stream windows (256 KiB initial, grown up to 8 MiB) many times.
var bigBody = func() []byte {
	b := make([]byte, 5<<20)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

// get sends one HTTP/1.0 request with the given Host through addr and returns the body.
func get(addr, host string) (string, error) { return getPath(addr, host, "/") }

func getPath(addr, host, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// closedWithin reports whether the server closes c within d without sending anything.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		return false
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// trc runs tftunnel, the project's trc-compatible client (go-yamux v1.2.4 and the 0x1111
// handshake, the flags of trc v0.1.0); upstream trc itself cannot be built here (the Go
// module proxy refuses github.com/threefoldtech/tcprouter).
func trc(t *testing.T, secret, remote, local, localTLS string) *exec.Cmd {
	t.Helper()
	args := []string{"--secret", secret, "--remote", remote, "--local", local, "--backoff", "1"}
	if localTLS != "" {
		args = append(args, "--local-tls", localTLS)
	}
	cmd := exec.Command(testutil.Binary(t, "tftunnel"), args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// localTLS is a tunnel client's local TLS service: it answers "local-tls <SNI>".
func localTLS(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "local-tls %s", req.TLS.ServerName)
	}))
	t.Cleanup(s.Close)
	return s
}

// waitRoute waits until the router's route table references secret.
func waitRoute(t *testing.T, r *running, secret string) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, "route", func() bool { return r.Table.HasSecret(secret) })
}
