package router

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

func tlsGet(t *testing.T, routerTLS, sni string) (string, error) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: sni}, //nolint:gosec // test backend
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", routerTLS)
		},
		DisableKeepAlives: true,
	}}
	resp, err := client.Get("https://" + sni + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// A trc-compatible client (tftunnel, go-yamux v1.2.4 as trc uses) registers, carries HTTP and TLS, survives window
// updates on a large transfer, and its death is noticed at once.
func TestTunnelWithRealTrc(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	tlsBackend := localTLS(t)
	r := startRouter(t, rd.Port, "", Options{})
	const secret = "1234:s3cr3t"
	setRoute(t, rd, "tun.example", "", secret, 0, 0)
	testutil.WaitFor(t, 5*time.Second, "route", func() bool { return r.Table.Len() == 1 })

	local := fmt.Sprintf("127.0.0.1:%d", plain)
	cmd := trc(t, secret, r.trcAddr(), local, tlsBackend.Listener.Addr().String())
	testutil.WaitFor(t, 10*time.Second, "trc registered", func() bool { return r.Registry.Len() == 1 })
	if got, err := get(r.http(), "tun.example"); err != nil || got != "local tun.example " {
		t.Fatalf("HTTP through tunnel: %q, %v", got, err)
	}
	if got, err := tlsGet(t, r.tls(), "tun.example"); err != nil || got != "local-tls tun.example" {
		t.Fatalf("TLS through tunnel: %q, %v", got, err)
	}
	got, err := getPath(r.http(), "tun.example", "/big")
	if err != nil || !bytes.Equal([]byte(got), bigBody) {
		t.Fatalf("5 MiB through tunnel: %d bytes, %v", len(got), err)
	}
	if v := promtest.ToFloat64(r.Metrics.TunnelsActive); v != 1 {
		t.Fatalf("tunnels_active = %v", v)
	}
	// Counted when the router's side of the connection ends, which may be after the client
	// read the last byte.
	testutil.WaitFor(t, 5*time.Second, "tunnel bytes out counted", func() bool {
		return promtest.ToFloat64(r.Metrics.TunnelBytes.WithLabelValues("1234", "out")) >= float64(len(bigBody))
	})

	// trc dies: the session is dropped at once and connections are refused cleanly
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	testutil.WaitFor(t, 5*time.Second, "dead session removed", func() bool { return r.Registry.Len() == 0 })
	if _, err := get(r.http(), "tun.example"); err == nil {
		t.Fatal("request served without a tunnel")
	}
	if v := promtest.ToFloat64(r.Metrics.TunnelStreams.WithLabelValues("1234", "no_tunnel")); v != 1 {
		t.Fatalf("no_tunnel = %v", v)
	}
	// and a new trc registers again
	trc(t, secret, r.trcAddr(), local, "")
	testutil.WaitFor(t, 10*time.Second, "request through the new tunnel", func() bool {
		got, err := get(r.http(), "tun.example")
		return err == nil && got == "local tun.example "
	})
}

// A second trc with the same secret replaces the first, whose session is closed.
func TestTunnelReplacement(t *testing.T) {
	_, plain := named(t, "local")
	r := startRouter(t, 0, "[server.services.\"static-tun.example\"]\nclientsecret = \"u:x\"\n", Options{})
	local := fmt.Sprintf("127.0.0.1:%d", plain)
	trc(t, "u:x", r.trcAddr(), local, "")
	testutil.WaitFor(t, 10*time.Second, "first registered", func() bool { return r.Registry.Len() == 1 })
	first, _ := r.Registry.Get("u:x")
	trc(t, "u:x", r.trcAddr(), local, "")
	testutil.WaitFor(t, 10*time.Second, "first session replaced and closed", func() bool {
		cur, ok := r.Registry.Get("u:x")
		return ok && cur != first && first.Closed()
	})
	if r.Registry.Len() != 1 {
		t.Fatalf("registry holds %d sessions for one secret", r.Registry.Len())
	}
	testutil.WaitFor(t, 10*time.Second, "static tunnel route serves", func() bool {
		got, err := get(r.http(), "static-tun.example")
		return err == nil && got == "local static-tun.example "
	})
}

// A client that connects to the tunnel port and sends garbage or nothing is dropped.
func TestTunnelPortRejectsJunk(t *testing.T) {
	r := startRouter(t, 0, "", Options{HandshakeTimeout: 300 * time.Millisecond})
	for _, junk := range [][]byte{nil, []byte("GET / HTTP/1.1\r\n\r\n"), {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0x22, 0x22, 0, 0}} {
		c, err := net.Dial("tcp", r.trcAddr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(junk)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, c)
		c.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("junk %q: connection kept open", junk)
		}
	}
	if r.Registry.Len() != 0 {
		t.Fatal("junk registered")
	}
}

// The client's FIN travels through the tunnel (yamux FIN) and the client side of the tunnel
// passes it on to the local service, which answers only then.
func TestTunnelHalfClose(t *testing.T) {
	port := readAllServer(t)
	r := startRouter(t, 0, "[server.services.\"hc.example\"]\nclientsecret = \"9:hc\"\n", Options{})
	trc(t, "9:hc", r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", port), "")
	testutil.WaitFor(t, 10*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })
	c, err := net.Dial("tcp", r.http())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST / HTTP/1.1\r\nHost: hc.example\r\n\r\nbody"
	fmt.Fprint(c, req)
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != fmt.Sprintf("read %d bytes", len(req)) {
		t.Fatalf("got %q, %v", b, err)
	}
}
