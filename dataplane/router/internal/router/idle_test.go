package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

// keepAliveGet sends one HTTP/1.1 request on c (a kept-alive connection) and reads the answer.
func keepAliveGet(c net.Conn, br *bufio.Reader, host, path string, body []byte) (string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	method := "GET"
	if body != nil {
		method = "PUT"
	}
	if _, err := fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", method, path, host, len(body), body); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Connections through a tunnel that wait for data hold no copy buffer (10,000 idle
// connections would otherwise hold 2 x 16 KiB each), and still carry the next request, a
// bulk download and a bulk upload when they wake up.
func TestIdleTunnelConnectionsHoldNoCopyBuffers(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	r := startRouter(t, rd.Port, "", Options{})
	const secret = "1234:idle"
	setRoute(t, rd, "tun.example", "", secret, 0, 0)
	testutil.WaitFor(t, 5*time.Second, "route", func() bool { return r.Table.Len() == 1 })
	trc(t, secret, r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", plain), "")
	testutil.WaitFor(t, 10*time.Second, "trc registered", func() bool { return r.Registry.Len() == 1 })

	const n = 50
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", r.http(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
		if got, err := keepAliveGet(c, readers[i], "tun.example", "/", nil); err != nil || got != "local tun.example " {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "no copy buffer held by idle connections", func() bool { return buffersHeld.Load() == 0 })

	for i, c := range conns {
		if got, err := keepAliveGet(c, readers[i], "tun.example", "/", nil); err != nil || got != "local tun.example " {
			t.Fatalf("connection %d after idling: %q, %v", i, got, err)
		}
	}
	got, err := keepAliveGet(conns[0], readers[0], "tun.example", "/big", nil)
	if err != nil || !bytes.Equal([]byte(got), bigBody) {
		t.Fatalf("5 MiB download after idling: %d bytes, %v", len(got), err)
	}
	up := bytes.Repeat([]byte("u"), 3<<20)
	got, err = keepAliveGet(conns[1], readers[1], "tun.example", "/", up)
	if err != nil || got != "local tun.example "+string(up) {
		t.Fatalf("3 MiB upload after idling: %d bytes, %v", len(got), err)
	}
	testutil.WaitFor(t, 5*time.Second, "buffers given back after the transfers", func() bool { return buffersHeld.Load() == 0 })
}
