package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	yamux "github.com/libp2p/go-yamux" // tftunnel's multiplexer
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"tfgateway.dev/dataplane/router/internal/testutil"
	"tfgateway.dev/dataplane/router/internal/tunnel"
)

func dataConns(r *running, result string) float64 {
	return promtest.ToFloat64(r.Metrics.DataConns.WithLabelValues(result))
}

// session returns the live session for secret (fails the test if there is none).
func session(t *testing.T, r *running, secret string) *tunnel.Session {
	t.Helper()
	s, ok := r.Registry.Get(secret)
	if !ok {
		t.Fatal("no session")
	}
	return s
}

// uploadThrough sends an HTTP head and n bytes to a readAllServer route through the HTTP
// listener, half-closes, and returns the backend's answer.
func uploadThrough(addr, host string, n int) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	head := fmt.Sprintf("PUT / HTTP/1.0\r\nHost: %s\r\n\r\n", host)
	if _, err := io.WriteString(c, head); err != nil {
		return "", err
	}
	if _, err := io.CopyN(c, zeros{}, int64(n)); err != nil {
		return "", err
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return strings.TrimPrefix(string(b), ""), err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// The real tftunnel with --pin takes data connections from a router that offers them: HTTP
// by Host, TLS by SNI, bulk both ways, many concurrent connections, every ticket used and
// nothing left waiting; a matched data connection does not use up the client's handshake
// rate (20 connections on a bucket of 5 tokens).
func TestDataConnectionsWithRealTftunnel(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	tlsBackend := localTLS(t)
	sink := readAllServer(t)
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id,
		TunnelSources: tunnel.SourceLimits{HandshakesPerMinute: 1, HandshakeBurst: 5, MaxConnsPerSource: 200}})
	const secret, upSecret = "1234:s3cr3t", "1235:upload"
	setRoute(t, rd, "dc.example", "", secret, 0, 0)
	setRoute(t, rd, "up.example", "", upSecret, 0, 0)
	testutil.WaitFor(t, 5*time.Second, "routes", func() bool { return r.Table.HasSecret(secret) && r.Table.HasSecret(upSecret) })

	_, out := tftunnel(t, secret, r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", plain), "--pin", id.Pin,
		"--local-tls", tlsBackend.Listener.Addr().String())
	tftunnel(t, upSecret, r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", sink), "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "registered", func() bool { return r.Registry.Len() == 2 })
	if !session(t, r, secret).DataConns() {
		t.Fatal("protocol 2 not negotiated")
	}
	if got, err := get(r.http(), "dc.example"); err != nil || got != "local dc.example " {
		t.Fatalf("HTTP by Host on a data connection: %q, %v (client: %s)", got, err, out.String())
	}
	if got, err := tlsGet(t, r.tls(), "dc.example"); err != nil || got != "local-tls dc.example" {
		t.Fatalf("TLS by SNI on a data connection: %q, %v", got, err)
	}
	// download: 5 MiB
	got, err := getPath(r.http(), "dc.example", "/big")
	if err != nil || !bytes.Equal([]byte(got), bigBody) {
		t.Fatalf("5 MiB download: %d bytes, %v", len(got), err)
	}
	// upload: 64 MiB, the half-close passed on both ways
	const up = 64 << 20
	head := len("PUT / HTTP/1.0\r\nHost: up.example\r\n\r\n")
	if got, err := uploadThrough(r.http(), "up.example", up); err != nil || got != fmt.Sprintf("read %d bytes", up+head) {
		t.Fatalf("64 MiB upload: %q, %v", got, err)
	}
	// many at once
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := "dc.example"
			if got, err := get(r.http(), host); err != nil || got != "local "+host+" " {
				errs <- fmt.Errorf("connection %d: %q, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ok := dataConns(r, tunnel.DataOK); ok != n+4 {
		t.Fatalf("data connections ok = %v, want %d", ok, n+4)
	}
	if v := dataConns(r, "inline") + dataConns(r, "expired") + registrations(r, tunnel.ReasonSourceRate); v != 0 {
		t.Fatalf("inline/expired/rate limited: %v", v)
	}
	testutil.WaitFor(t, 5*time.Second, "streams and tickets freed", func() bool {
		return r.Tickets.Pending() == 0 && session(t, r, secret).Streams() == 0 && session(t, r, upSecret).Streams() == 0
	})
	// Counted when the router's side of the connection ends, which may be after the client
	// read the last byte.
	testutil.WaitFor(t, 5*time.Second, "tunnel bytes out counted", func() bool {
		return promtest.ToFloat64(r.Metrics.TunnelBytes.WithLabelValues("1234", "out")) >= float64(len(bigBody))
	})
}

// Protocol 2 is offered only when on: a router with data connections off (or an older one,
// which knows only protocol 1) and a client with --data-in-tls both keep every connection
// in the TLS session.
func TestDataConnectionsFallBackToStreams(t *testing.T) {
	rd := testutil.StartRedis(t)
	_, plain := named(t, "local")
	local := fmt.Sprintf("127.0.0.1:%d", plain)
	const secret = "1234:s3cr3t"
	for _, c := range []struct {
		name  string
		opt   Options
		extra []string
	}{
		{"router without data connections", Options{NoDataConnections: true}, nil},
		{"tftunnel --data-in-tls", Options{}, []string{"--data-in-tls"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := testIdentity(t)
			c.opt.TunnelIdentity = id
			r := startRouter(t, rd.Port, "", c.opt)
			setRoute(t, rd, "fb.example", "", secret, 0, 0)
			waitRoute(t, r, secret)
			tftunnel(t, secret, r.trcAddr(), local, append([]string{"--pin", id.Pin}, c.extra...)...)
			testutil.WaitFor(t, 10*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })
			if session(t, r, secret).DataConns() {
				t.Fatal("protocol 2 negotiated")
			}
			got, err := getPath(r.http(), "fb.example", "/big")
			if err != nil || !bytes.Equal([]byte(got), bigBody) {
				t.Fatalf("5 MiB through the session: %d bytes, %v", len(got), err)
			}
			if v := dataConns(r, tunnel.DataOK) + dataConns(r, "inline"); v != 0 {
				t.Fatalf("data connections used: %v", v)
			}
		})
	}
}

// p2client is protocol 2's client side in this process, taking the tickets itself.
type p2client struct {
	sess    *yamux.Session
	streams chan p2stream
}

type p2stream struct {
	st     *yamux.Stream
	kind   byte
	ticket tunnel.Ticket
}

func newP2Client(t *testing.T, src, addr, secret string, pin []byte) *p2client {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := tunnel.ClientHandshake(ctx, c, secret, pin, tunnel.ALPNData, tunnel.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != tunnel.ALPNData {
		t.Fatalf("negotiated %q", p)
	}
	sess := clientSession(t, tc)
	p := &p2client{sess: sess, streams: make(chan p2stream, 64)}
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			var b [1 + tunnel.TicketLen]byte
			if _, err := io.ReadFull(st, b[:1]); err != nil {
				continue
			}
			ps := p2stream{st: st, kind: b[0]}
			if b[0] == tunnel.StreamTicket {
				if _, err := io.ReadFull(st, b[1:]); err != nil {
					continue
				}
				copy(ps.ticket[:], b[1:])
			}
			p.streams <- ps
		}
	}()
	return p
}

func (p *p2client) next(t *testing.T) p2stream {
	t.Helper()
	select {
	case s := <-p.streams:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no stream from the router")
		return p2stream{}
	}
}

// presentTicket opens a data connection from src with tk.
func presentTicket(t *testing.T, src, addr string, tk tunnel.Ticket) net.Conn {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(append([]byte{tunnel.DataConnMarker}, tk[:]...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// publicGet starts an HTTP request through the router and returns the connection.
func publicGet(t *testing.T, r *running, host string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.http(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host)
	return c
}

// serveOne answers the request on a data connection and closes it.
func serveOne(t *testing.T, dc net.Conn, body string) {
	t.Helper()
	_ = dc.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(dc))
	if err != nil {
		t.Fatalf("the data connection did not carry the request: %v", err)
	}
	_ = req.Body.Close()
	fmt.Fprintf(dc, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	_ = dc.Close()
}

func readBody(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Tickets: single use, only from the tunnel client's source address (not from another
// tunnel's client), only while waiting;
// a refused one closes the connection and counts (metrics, refusal summary), never a log
// line of its own; a ticket never used expires and its public connection is closed; a
// client that resets the ticket stream ends the wait at once; tickets beyond the per-tunnel
// bound go inline in their stream.
func TestTicketsRefusedAndExpired(t *testing.T) {
	rd := testutil.StartRedis(t)
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id, TicketTTL: 4 * time.Second, PendingTickets: 2})
	const secret = "77:tickets"
	setRoute(t, rd, "tk.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	p := newP2Client(t, "127.0.0.1", r.trcAddr(), secret, mustPin(t, id))
	testutil.WaitFor(t, 5*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })

	pub := publicGet(t, r, "tk.example")
	s := p.next(t)
	if s.kind != tunnel.StreamTicket {
		t.Fatalf("stream kind %d, want a ticket", s.kind)
	}
	// from another tunnel's client (another secret, registered from 127.0.0.2): refused, and
	// the ticket stays good for its owner
	setRoute(t, rd, "other.example", "", "78:other", 0, 0)
	testutil.WaitFor(t, 5*time.Second, "route", func() bool { return r.Table.HasSecret("78:other") })
	newP2Client(t, "127.0.0.2", r.trcAddr(), "78:other", mustPin(t, id))
	testutil.WaitFor(t, 5*time.Second, "second tunnel", func() bool { return r.Registry.Len() == 2 })
	if !closedWithin(presentTicket(t, "127.0.0.2", r.trcAddr(), s.ticket), 2*time.Second) {
		t.Fatal("a ticket from another tunnel's client was not refused")
	}
	// a random ticket: refused
	var random tunnel.Ticket
	_, _ = rand.Read(random[:])
	if !closedWithin(presentTicket(t, "127.0.0.1", r.trcAddr(), random), 2*time.Second) {
		t.Fatal("a random ticket was not refused")
	}
	dc := presentTicket(t, "127.0.0.1", r.trcAddr(), s.ticket)
	_ = s.st.Close()
	serveOne(t, dc, "via ticket")
	if got := readBody(t, pub); got != "via ticket" {
		t.Fatalf("public connection got %q", got)
	}
	// replayed: refused
	if !closedWithin(presentTicket(t, "127.0.0.1", r.trcAddr(), s.ticket), 2*time.Second) {
		t.Fatal("a used ticket was accepted again")
	}
	testutil.WaitFor(t, 5*time.Second, "refusals counted", func() bool {
		return dataConns(r, tunnel.ReasonBadTicket) == 3 && registrations(r, tunnel.ReasonBadTicket) == 3
	})

	// never used: the ticket expires, the public connection is closed, the ticket is gone
	pub = publicGet(t, r, "tk.example")
	s = p.next(t)
	if !closedWithin(pub, 6*time.Second) {
		t.Fatal("public connection not closed when its ticket expired")
	}
	testutil.WaitFor(t, 2*time.Second, "expired counted", func() bool { return dataConns(r, "expired") == 1 })
	if r.Tickets.Pending() != 0 {
		t.Fatalf("%d tickets still waiting", r.Tickets.Pending())
	}
	if !closedWithin(presentTicket(t, "127.0.0.1", r.trcAddr(), s.ticket), 2*time.Second) {
		t.Fatal("an expired ticket was accepted")
	}

	// the client cannot dial and resets the stream: closed at once, long before the TTL
	pub = publicGet(t, r, "tk.example")
	s = p.next(t)
	_ = s.st.Reset()
	if !closedWithin(pub, time.Second) {
		t.Fatal("public connection not closed when the client refused its ticket")
	}
	testutil.WaitFor(t, 2*time.Second, "refused counted", func() bool { return dataConns(r, "refused_by_client") == 1 })

	// two tickets waiting (the bound): the third connection comes inline in its stream
	var pubs []net.Conn
	var held []p2stream
	for range 2 {
		pubs = append(pubs, publicGet(t, r, "tk.example"))
		held = append(held, p.next(t))
	}
	pub = publicGet(t, r, "tk.example")
	s = p.next(t)
	if s.kind != tunnel.StreamInline {
		t.Fatalf("third stream kind %d, want inline", s.kind)
	}
	serveOne(t, s.st, "inline")
	if got := readBody(t, pub); got != "inline" {
		t.Fatalf("inline connection got %q", got)
	}
	// the tunnel dies with tickets waiting: their connections are closed, nothing is left
	_ = p.sess.Close()
	for _, c := range pubs {
		if !closedWithin(c, 2*time.Second) {
			t.Fatal("public connection kept after its tunnel died")
		}
	}
	testutil.WaitFor(t, 5*time.Second, "tickets freed", func() bool {
		return r.Tickets.Pending() == 0 && dataConns(r, "tunnel_closed") == 2 && r.Registry.Len() == 1
	})
	_ = held
}

// A data connection lives no longer than its tunnel: when the session ends, the public and
// data connections it carried are closed.
func TestDataConnectionEndsWithItsTunnel(t *testing.T) {
	rd := testutil.StartRedis(t)
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id})
	const secret = "78:ends"
	setRoute(t, rd, "end.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	p := newP2Client(t, "127.0.0.1", r.trcAddr(), secret, mustPin(t, id))
	testutil.WaitFor(t, 5*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })

	pub := publicGet(t, r, "end.example")
	s := p.next(t)
	dc := presentTicket(t, "127.0.0.1", r.trcAddr(), s.ticket)
	_ = s.st.Close()
	// the request arrives on the data connection, then the data connection's peer (the
	// public client) goes away: the data connection is closed
	_ = dc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := http.ReadRequest(bufio.NewReader(dc)); err != nil {
		t.Fatal(err)
	}
	_ = pub.Close()
	if !closedWithin(dc, 3*time.Second) {
		t.Fatal("data connection kept after its public client closed")
	}
	// another one, then the tunnel dies
	pub = publicGet(t, r, "end.example")
	s = p.next(t)
	dc = presentTicket(t, "127.0.0.1", r.trcAddr(), s.ticket)
	_ = s.st.Close()
	_ = dc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := http.ReadRequest(bufio.NewReader(dc)); err != nil {
		t.Fatal(err)
	}
	_ = p.sess.Close()
	if !closedWithin(pub, 3*time.Second) || !closedWithin(dc, 3*time.Second) {
		t.Fatal("connections kept after their tunnel died")
	}
	testutil.WaitFor(t, 5*time.Second, "nothing left", func() bool {
		return r.Registry.Len() == 0 && r.Tickets.Pending() == 0
	})
}

// A route the router terminates sends decrypted bytes to the tunnel: with protocol 2 they
// stay inside the TLS session (an inline stream), never on a data connection.
func TestTerminatedRouteStaysInTheSession(t *testing.T) {
	ca := testutil.NewCA(t)
	cert, key := ca.Issue(t, "tun.example")
	plain := headers(t)
	id := testIdentity(t)
	r := startRouter(t, 0, "[server.services.\"tun.example\"]\nclientsecret = \"7:tun\"\nterminate = \"http\"\n"+
		tlsSection(t, [2]string{cert, key}), Options{TunnelIdentity: id})
	tftunnel(t, "7:tun", r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", plain), "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "tunnel registered", func() bool { return r.Registry.Len() == 1 })
	if !session(t, r, "7:tun").DataConns() {
		t.Fatal("protocol 2 not negotiated")
	}
	code, body, err := httpsGet(ca, r.tls(), "tun.example", "tun.example", "")
	if err != nil || code != 200 || body != "host=tun.example xff=127.0.0.1 proto=https xhost=tun.example proto-major=1" {
		t.Fatalf("terminated through the tunnel: %d %q, %v", code, body, err)
	}
	if v := dataConns(r, tunnel.DataOK); v != 0 {
		t.Fatalf("%v data connections for a terminated route", v)
	}
}

// A client whose data connections never arrive (a NAT that gives them another address)
// loses DataMissLimit connections, then its tunnel carries every connection in its session;
// the public connections that missed are closed, not held.
func TestDataConnectionsTurnOffAfterMisses(t *testing.T) {
	rd := testutil.StartRedis(t)
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id, TicketTTL: 300 * time.Millisecond})
	const secret = "79:misses"
	setRoute(t, rd, "miss.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	p := newP2Client(t, "127.0.0.1", r.trcAddr(), secret, mustPin(t, id))
	testutil.WaitFor(t, 5*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })

	for i := range tunnel.DataMissLimit {
		pub := publicGet(t, r, "miss.example")
		if s := p.next(t); s.kind != tunnel.StreamTicket {
			t.Fatalf("connection %d: stream kind %d, want a ticket", i, s.kind)
		}
		if !closedWithin(pub, 3*time.Second) {
			t.Fatalf("connection %d kept after its ticket expired", i)
		}
	}
	pub := publicGet(t, r, "miss.example")
	s := p.next(t)
	if s.kind != tunnel.StreamInline {
		t.Fatalf("after %d misses: stream kind %d, want inline", tunnel.DataMissLimit, s.kind)
	}
	serveOne(t, s.st, "in the session")
	if got := readBody(t, pub); got != "in the session" {
		t.Fatalf("got %q", got)
	}
	if v := dataConns(r, "expired"); v != tunnel.DataMissLimit {
		t.Fatalf("expired = %v", v)
	}
}

// A matched data connection leaves its source's connection count on the clients port (it
// holds its stream's slot instead): a client limited to 4 connections there carries 20
// long-lived connections at once.
func TestMatchedDataConnectionsLeaveTheSourceCount(t *testing.T) {
	rd := testutil.StartRedis(t)
	echo := tcpBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id,
		TunnelSources: tunnel.SourceLimits{HandshakesPerMinute: 60, HandshakeBurst: 10, MaxConnsPerSource: 4}})
	const secret = "80:many"
	setRoute(t, rd, "many.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	tftunnel(t, secret, r.trcAddr(), fmt.Sprintf("127.0.0.1:%d", echo), "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })

	var held []*bufio.Reader
	for i := range 20 {
		c := publicGet(t, r, "many.example") // the echo service sends the request head back
		br := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "GET / HTTP/1.0") {
			t.Fatalf("connection %d: %q, %v", i, line, err)
		}
		held = append(held, br)
	}
	if v := dataConns(r, tunnel.DataOK); v != 20 {
		t.Fatalf("data connections ok = %v, want 20", v)
	}
	if v := registrations(r, tunnel.ReasonSourceConns); v != 0 {
		t.Fatalf("source_conns_limited = %v", v)
	}
	if n := session(t, r, secret).Streams(); n != 20 {
		t.Fatalf("%d stream slots held, want 20", n)
	}
	_ = held
}

// cutRelay forwards TCP connections to target and can cut the client side of one of them
// (a reset towards the client, the upstream side left open and silent: a path that died
// between client and relay) and stop accepting.
type cutRelay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn // client sides, in accept order
}

func newCutRelay(t *testing.T, target string) *cutRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &cutRelay{ln: ln}
	var ups []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range append(r.conns, ups...) {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			ups = append(ups, up)
			r.mu.Unlock()
			// each direction passes its EOF on as a half-close and never closes the other
			// side on an error
			go func() {
				if _, err := io.Copy(up, c); err == nil {
					_ = up.(*net.TCPConn).CloseWrite()
				}
			}()
			go func() {
				if _, err := io.Copy(c, up); err == nil {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
		}
	}()
	return r
}

func (r *cutRelay) addr() string { return r.ln.Addr().String() }

func (r *cutRelay) cut(i int) {
	_ = r.ln.Close()
	r.mu.Lock()
	c := r.conns[i]
	r.mu.Unlock()
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
}

// tftunnel's data connections end with its session: when the path of its session dies (the
// router cannot tell yet), tftunnel closes them, so the router ends the public connections
// they carried instead of holding them until its keepalive notices.
func TestTftunnelEndsDataConnectionsWithItsSession(t *testing.T) {
	rd := testutil.StartRedis(t)
	echo := tcpBackend(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	id := testIdentity(t)
	r := startRouter(t, rd.Port, "", Options{TunnelIdentity: id})
	const secret = "81:cut"
	setRoute(t, rd, "cut.example", "", secret, 0, 0)
	waitRoute(t, r, secret)
	relay := newCutRelay(t, r.trcAddr())
	tftunnel(t, secret, relay.addr(), fmt.Sprintf("127.0.0.1:%d", echo), "--pin", id.Pin)
	testutil.WaitFor(t, 10*time.Second, "registered", func() bool { return r.Registry.Len() == 1 })

	pub := publicGet(t, r, "cut.example")
	br := bufio.NewReader(pub)
	_ = pub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "GET / HTTP/1.0") {
		t.Fatalf("through the data connection: %q, %v", line, err)
	}
	if v := dataConns(r, tunnel.DataOK); v != 1 {
		t.Fatalf("data connections ok = %v", v)
	}
	relay.cut(0) // the session's path: tftunnel sees it die, the router does not
	_ = pub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("public connection not ended by tftunnel within 5 s: %v", err)
	}
	if r.Registry.Len() != 1 {
		t.Fatal("the router noticed the cut itself: the test proves nothing")
	}
}
