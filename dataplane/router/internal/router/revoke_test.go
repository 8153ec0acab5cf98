package router

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"tfgateway.dev/dataplane/router/internal/testutil"
)

// echoLocal is a tunnel client's local service: it echoes, keeps every connection open
// until its peer ends it, and counts the connections it was given.
func echoLocal(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	port := tcpBackend(t, func(c net.Conn) {
		n.Add(1)
		_, _ = io.Copy(c, c)
	})
	return fmt.Sprintf("127.0.0.1:%d", port), &n
}

// heldConn opens a public connection to host on the HTTP port and waits until the tunnel
// client's echo service returned its head: the connection is carried, and stays open.
func heldConn(t *testing.T, r *running, host string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.http(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	head := "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(head))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != head {
		t.Fatalf("held connection to %s: echo %q, %v", host, got, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// endsWithin reports whether the router ends c (EOF or reset) within d.
func endsWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

func revocations(r *running, what string) float64 {
	return promtest.ToFloat64(r.Metrics.Revocations.WithLabelValues(what))
}

// Deleting the last route of a secret closes its tunnel at once: the public connections it
// carried end, tfrouter_tunnels_active falls to 0, the client sees its connection end and,
// reconnecting, the refusal that no route uses its secret; the name, reserved again by
// another owner, reaches the new owner's client, never the old one.
func TestDeletedRouteClosesItsTunnel(t *testing.T) {
	rd := testutil.StartRedis(t)
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id})
	const secretA, secretB = "1001:owner-a", "2002:owner-b"
	setRoute(t, rd, "gone.example", "", secretA, 0, 0)
	waitRoute(t, r, secretA)
	localA, connsA := echoLocal(t)
	_, outA := tftunnel(t, secretA, r.trcAddr(), localA, "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "owner A's tunnel", func() bool { return r.Registry.Len() == 1 })
	held := heldConn(t, r, "gone.example")

	if err := rd.Client.Del(context.Background(), "/tcprouter/service/gone.example").Err(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "tunnel closed and counted", func() bool {
		return r.Registry.Len() == 0 && promtest.ToFloat64(r.Metrics.TunnelsActive) == 0 && revocations(r, "tunnel") == 1
	})
	if !endsWithin(held, 10*time.Second) {
		t.Fatal("a public connection of the deleted route's tunnel stayed open")
	}
	testutil.WaitFor(t, 15*time.Second, "the client refused on reconnect", func() bool {
		return strings.Contains(outA.String(), "no reverse proxy on this gateway uses this secret")
	})
	if !strings.Contains(outA.String(), "tunnel down") {
		t.Fatalf("the client did not see its session end:\n%s", outA.String())
	}

	// Owner B reserves the name again: its connections reach B's client only.
	setRoute(t, rd, "gone.example", "", secretB, 0, 0)
	waitRoute(t, r, secretB)
	_, plainB := named(t, "owner-b")
	tftunnel(t, secretB, r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", plainB), "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "owner B's tunnel", func() bool { _, ok := r.Registry.Get(secretB); return ok })
	before := connsA.Load()
	for range 5 {
		if got, err := get(r.http(), "gone.example"); err != nil || got != "owner-b gone.example " {
			t.Fatalf("re-reserved name: %q, %v", got, err)
		}
	}
	if _, ok := r.Registry.Get(secretA); ok || connsA.Load() != before {
		t.Fatalf("owner A's client registered again or got a connection of the re-reserved name (%d connections)", connsA.Load()-before)
	}
}

// A name that passes to another secret while its old secret still serves other routes: the
// streams it had on the old tunnel are reset (data connections included), the old tunnel
// keeps serving its other routes, and new connections to the name reach the new secret's
// client only.
func TestMovedRouteResetsItsStreams(t *testing.T) {
	rd := testutil.StartRedis(t)
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id})
	const secretA, secretB = "1001:owner-a", "2002:owner-b"
	setRoute(t, rd, "moved.example", "", secretA, 0, 0)
	setRoute(t, rd, "kept.example", "", secretA, 0, 0)
	waitRoute(t, r, secretA)
	testutil.WaitFor(t, 5*time.Second, "routes", func() bool { return r.Table.Len() == 2 })
	localA, connsA := echoLocal(t)
	tftunnel(t, secretA, r.trcAddr(), localA, "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "owner A's tunnel", func() bool { return r.Registry.Len() == 1 })
	moved := heldConn(t, r, "moved.example")
	kept := heldConn(t, r, "kept.example")
	if promtest.ToFloat64(r.Metrics.DataConns.WithLabelValues("ok")) != 2 {
		t.Fatal("the held connections did not use data connections")
	}

	setRoute(t, rd, "moved.example", "", secretB, 0, 0)
	waitRoute(t, r, secretB)
	if !endsWithin(moved, 10*time.Second) {
		t.Fatal("the moved route's connection on the old tunnel stayed open")
	}
	// Counted once the reset is done, which the client may see first.
	testutil.WaitFor(t, 5*time.Second, "the stream's revocation counted", func() bool { return revocations(r, "stream") == 1 })
	if revocations(r, "tunnel") != 0 || r.Registry.Len() != 1 {
		t.Fatalf("the old tunnel was closed (revocations %v, tunnels %d)", revocations(r, "tunnel"), r.Registry.Len())
	}
	// The other route's connection is untouched and the old tunnel still serves it.
	if _, err := io.WriteString(kept, "ping"); err != nil {
		t.Fatal(err)
	}
	_ = kept.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(kept, b); return err }() != nil || string(b) != "ping" {
		t.Fatalf("the kept route's connection broke: %q", b)
	}
	heldConn(t, r, "kept.example")

	_, plainB := named(t, "owner-b")
	tftunnel(t, secretB, r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", plainB), "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "owner B's tunnel", func() bool { return r.Registry.Len() == 2 })
	before := connsA.Load()
	for range 5 {
		if got, err := get(r.http(), "moved.example"); err != nil || got != "owner-b moved.example " {
			t.Fatalf("moved name: %q, %v", got, err)
		}
	}
	if connsA.Load() != before {
		t.Fatal("the old owner's client got a connection of the moved name")
	}
}
