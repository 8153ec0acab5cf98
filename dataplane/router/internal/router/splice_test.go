package router

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

// A direct route carries bulk data both ways at once, byte for byte, through the spliced
// copy (pipes taken and given back as the data comes and goes), and passes half-closes on.
func TestSplicedBulkBothWays(t *testing.T) {
	const size = 24 << 20
	up := make([]byte, size)
	for i := range up {
		up[i] = byte(i*31 + i>>13)
	}
	down := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	// the backend reads the upload to its end (digest), then sends the download
	digest := make(chan string, 1)
	port := tcpBackend(t, func(c net.Conn) {
		h := sha256.New()
		n, _ := io.Copy(h, c)
		digest <- fmt.Sprintf("%d %x", n, h.Sum(nil))
		_, _ = c.Write(down)
	})
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"CATCH_ALL\"]\naddr = \"127.0.0.1\"\ntlsport = %d\n", port), Options{})
	c, err := net.Dial("tcp", r.tls())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(up)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(up)
	if d := <-digest; d != fmt.Sprintf("%d %x", size, sum[:]) {
		t.Fatalf("backend read %s, want %d bytes of the upload", d, size)
	}
	if !bytes.Equal(got, down) {
		t.Fatalf("downloaded %d bytes, want %d (equal: false)", len(got), len(down))
	}
}

// Idle proxied connections hold no pipe: io.Copy's splice keeps a pipe pair per direction for
// the connection's life (four descriptors), the router's copy only while bytes are in flight.
func TestIdleConnectionsHoldNoPipes(t *testing.T) {
	_, port := named(t, "site")
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"a.example\"]\naddr = \"127.0.0.1\"\nhttpport = %d\n", port), Options{})
	before := pipeFDs(t)
	const n = 200
	for range n {
		c, err := net.Dial("tcp", r.http())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// a keep-alive request: answered, then the connection stays open and idle
		if _, err := fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if body, err := readResponse(c); err != nil || body != "site a.example " {
			t.Fatalf("%q %v", body, err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "connections open", func() bool {
		c, _ := r.sources.Count(netip.MustParseAddr("127.0.0.1"))
		return c == n
	})
	after := pipeFDs(t)
	t.Logf("pipe descriptors: %d before, %d with %d idle proxied connections", before, after, n)
	if after-before > 2*maxFreePipes {
		t.Fatalf("%d pipe descriptors for %d idle connections: pipes held while idle", after-before, n)
	}
}

// The pool's empty pipes are closed once idle for pipeIdle: after a burst of transfers has
// ended the router holds no pipe (1,000 aborted downloads through data connections left up to
// four pooled pipes, eight descriptors, for good: faults/test_tunnel_streams.py).
func TestIdlePipesAreClosed(t *testing.T) {
	setIdle := func(d time.Duration) { // read under the pool's lock (the reaper's goroutine)
		pipes.mu.Lock()
		pipeIdle = d
		pipes.mu.Unlock()
	}
	orig := pipeIdle
	setIdle(time.Second)
	t.Cleanup(func() { setIdle(orig) })
	pipes.expire() // what earlier tests pooled goes on the short schedule too
	testutil.WaitFor(t, 5*time.Second, "an empty pool", func() bool { return pipes.idle() == 0 })
	base := pipeFDs(t)
	// the backend sends 4 MiB, then waits for the client's end: the router's copy drains the
	// socket, finds nothing more to read and gives its pipe back to the pool
	const n, size = 8, 4 << 20
	port := tcpBackend(t, func(c net.Conn) {
		_, _ = c.Write(bytes.Repeat([]byte("x"), size))
		_, _ = io.Copy(io.Discard, c)
	})
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"CATCH_ALL\"]\naddr = \"127.0.0.1\"\ntlsport = %d\n", port), Options{})
	conns := make([]net.Conn, n)
	errs := make(chan error, n)
	for i := range conns {
		c, err := net.Dial("tcp", r.tls())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		if _, err := c.Write([]byte("not TLS: routed by the empty name\n")); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			_, err := io.ReadFull(c, make([]byte, size))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "pipes in the pool", func() bool { return pipes.idle() > 0 })
	pooled := pipes.idle()
	for _, c := range conns {
		_ = c.Close()
	}
	start := time.Now()
	testutil.WaitFor(t, 10*time.Second, "the pool's pipes closed", func() bool {
		return pipes.idle() == 0 && pipeFDs(t) == base
	})
	t.Logf("%d pooled pipes closed %v after the transfers ended", pooled, time.Since(start).Round(time.Millisecond))
}

func pipeFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// Without a descriptor for a pipe (EMFILE) a direct route still carries its bytes, through a
// pooled buffer for as long as no pipe can be had.
func TestSpliceFallsBackWithoutPipes(t *testing.T) {
	pipes.mu.Lock()
	free := pipes.free
	pipes.free = nil
	pipes.mu.Unlock()
	orig := newPipe
	newPipe = func() (*kpipe, error) { return nil, syscall.EMFILE }
	t.Cleanup(func() {
		newPipe = orig
		for _, p := range free {
			pipes.put(p) // back on the idle schedule
		}
	})
	port := readAllServer(t)
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"CATCH_ALL\"]\naddr = \"127.0.0.1\"\ntlsport = %d\n", port), Options{})
	c, err := net.Dial("tcp", r.tls())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	body := bytes.Repeat([]byte("x"), 3<<20)
	if _, err := c.Write(body); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != fmt.Sprintf("read %d bytes", len(body)) {
		t.Fatalf("backend answered %q", got)
	}
}
