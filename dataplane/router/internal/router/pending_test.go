package router

import (
	"net"
	"testing"
	"time"

	"tfgateway.dev/dataplane/router/internal/testutil"
	"tfgateway.dev/dataplane/router/internal/tunnel"
)

// Connections on the tunnel port that are still in their handshake are bounded per source
// (pending_per_source) and over all sources (max_pending, the backstop for a client with more
// sources than the per-source table holds): over either a new connection is closed at once
// and counted; a registered tunnel no longer counts, and once the held handshakes end a
// client registers again.
func TestTunnelHandshakesPendingBounded(t *testing.T) {
	rd := testutil.StartRedis(t)
	r := startRouter(t, rd.Port, "", Options{HandshakeTimeout: 60 * time.Second, TunnelMaxPending: 4,
		TunnelSources: tunnel.SourceLimits{HandshakesPerMinute: -1, MaxConnsPerSource: -1, MaxPendingPerSource: 2}})
	const secret = "5:pending"
	setRoute(t, rd, "pending.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	silent := func(src string) net.Conn {
		c, err := dialFrom(src, r.trcAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	from := func(src string) net.Dialer {
		return net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	}
	var held []net.Conn
	hold := func(src string) {
		held = append(held, silent(src))
		testutil.WaitFor(t, 5*time.Second, "handshake pending", func() bool { return r.tunnelPending() == len(held) })
	}
	hold("127.0.0.2")
	hold("127.0.0.2")
	if !refusedAtOnce(t, from("127.0.0.2"), r.trcAddr()) {
		t.Fatal("a third handshake of one source was not closed")
	}
	hold("127.0.0.3")
	hold("127.0.0.3")
	if !refusedAtOnce(t, from("127.0.0.4"), r.trcAddr()) {
		t.Fatal("a handshake over max_pending was not closed")
	}
	testutil.WaitFor(t, 5*time.Second, "refusals counted", func() bool {
		return registrations(r, tunnel.ReasonSourcePending) == 1 && registrations(r, tunnel.ReasonTooManyPending) == 1
	})
	for _, c := range held {
		_ = c.Close()
	}
	testutil.WaitFor(t, 5*time.Second, "held handshakes ended", func() bool { return r.tunnelPending() == 0 })
	legacyClient(t, "127.0.0.4", r.trcAddr(), secret, "registered")
	testutil.WaitFor(t, 10*time.Second, "served through the tunnel", func() bool {
		got, err := get(r.http(), "pending.example")
		return err == nil && got == "registered"
	})
	// The handshake leaves the count just after the session is registered (and may serve).
	testutil.WaitFor(t, 5*time.Second, "the registered tunnel's handshake no longer counted", func() bool { return r.tunnelPending() == 0 })
}
