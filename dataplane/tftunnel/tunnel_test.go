package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	yamux "github.com/libp2p/go-yamux"
)

// gateway is a minimal server side of the protocol, as the router speaks it.
type gateway struct {
	ln       net.Listener
	sessions chan *yamux.Session
	secrets  chan string
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{ln: ln, sessions: make(chan *yamux.Session, 8), secrets: make(chan string, 8)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cfg := yamux.DefaultConfig()
			cfg.LogOutput = io.Discard
			s, err := yamux.Server(c, cfg)
			if err != nil {
				c.Close()
				continue
			}
			st, err := s.AcceptStream()
			if err != nil {
				continue
			}
			hdr := make([]byte, 4)
			if _, err := io.ReadFull(st, hdr); err != nil {
				continue
			}
			if binary.BigEndian.Uint16(hdr) != magic {
				s.Close()
				continue
			}
			secret := make([]byte, binary.BigEndian.Uint16(hdr[2:]))
			if _, err := io.ReadFull(st, secret); err != nil {
				continue
			}
			g.secrets <- string(secret)
			g.sessions <- s
		}
	}()
	return g
}

// echoServer answers every connection with prefix + what it read until EOF.
func echoServer(t *testing.T, prefix string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte(prefix), b...))
			}()
		}
	}()
	return ln.Addr().String()
}

func startTunnel(t *testing.T, remote, local, localTLS string) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tun := &tunnel{remote: remote, secret: "42:s3cr3t", local: local, localTLS: localTLS,
		backoff: 50 * time.Millisecond, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan struct{})
	go func() { tun.run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("tunnel did not stop")
		}
	})
	return cancel
}

func roundTrip(t *testing.T, s *yamux.Session, payload []byte) string {
	t.Helper()
	got, err := tryRoundTrip(s, payload)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// roundTripTimeout bounds one round trip: the answer must come, and under -race on a
// loaded machine eight concurrent 1 MiB echoes took more than 5 s.
const roundTripTimeout = 60 * time.Second

// tryRoundTrip is roundTrip for goroutines other than the test's (which must not call
// t.Fatal, or the test waits forever for its answer).
func tryRoundTrip(s *yamux.Session, payload []byte) (string, error) {
	st, err := s.OpenStream()
	if err != nil {
		return "", err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(roundTripTimeout))
	if _, err := st.Write(payload); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	st.Close() // half-close: the echo server sees EOF
	b, err := io.ReadAll(st)
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return string(b), nil
}

func waitSession(t *testing.T, g *gateway) *yamux.Session {
	t.Helper()
	select {
	case s := <-g.sessions:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no tunnel registered")
		return nil
	}
}

func TestHandshakeBytes(t *testing.T) {
	got := handshake("1234:s3cr3t")
	want := []byte{0x11, 0x11, 0x00, 0x0b}
	want = append(want, "1234:s3cr3t"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("handshake %x, want %x", got, want)
	}
}

func TestRegistersAndRoutesByFirstByte(t *testing.T) {
	g := newGateway(t)
	startTunnel(t, g.ln.Addr().String(), echoServer(t, "plain:"), echoServer(t, "tls:"))
	s := waitSession(t, g)
	if secret := <-g.secrets; secret != "42:s3cr3t" {
		t.Fatalf("secret %q", secret)
	}
	if got := roundTrip(t, s, []byte("GET / HTTP/1.0\r\n\r\n")); got != "plain:GET / HTTP/1.0\r\n\r\n" {
		t.Fatalf("plain: %q", got)
	}
	if got := roundTrip(t, s, []byte{0x16, 0x03, 0x01}); got != "tls:\x16\x03\x01" {
		t.Fatalf("tls: %q", got)
	}
}

func TestConcurrentStreamsAndLargePayload(t *testing.T) {
	g := newGateway(t)
	startTunnel(t, g.ln.Addr().String(), echoServer(t, ""), "")
	s := waitSession(t, g)
	payload := bytes.Repeat([]byte("x"), 1<<20) // beyond the 256 KiB window
	type result struct {
		got string
		err error
	}
	results := make(chan result, 8)
	for range 8 {
		go func() {
			got, err := tryRoundTrip(s, payload)
			results <- result{got, err}
		}()
	}
	for range 8 {
		if r := <-results; r.err != nil || r.got != string(payload) {
			t.Fatalf("payload: %d bytes, %v", len(r.got), r.err)
		}
	}
}

func TestLocalDialFailureKeepsTunnel(t *testing.T) {
	g := newGateway(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	startTunnel(t, g.ln.Addr().String(), echoServer(t, "ok:"), deadAddr)
	s := waitSession(t, g)
	st, err := s.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = st.Write([]byte{0x16})
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(st); err == nil {
		t.Log("stream ended cleanly")
	}
	if got := roundTrip(t, s, []byte("after")); got != "ok:after" {
		t.Fatalf("tunnel broken after a failed local dial: %q", got)
	}
}

func TestReconnectsAfterSessionLoss(t *testing.T) {
	g := newGateway(t)
	startTunnel(t, g.ln.Addr().String(), echoServer(t, ""), "")
	first := waitSession(t, g)
	<-g.secrets
	first.Close()
	second := waitSession(t, g)
	if got := roundTrip(t, second, []byte("again")); got != "again" {
		t.Fatalf("after reconnect: %q", got)
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"TRC_SECRET": "1:a", "TRC_REMOTE": "h1:18000,h2:18000", "TRC_LOCAL": "127.0.0.1:80"}
	o, err := parseFlags([]string{"--backoff", "2"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.secret != "1:a" || len(o.remotes) != 2 || o.localTLS != "127.0.0.1:80" || o.backoff != 2*time.Second {
		t.Fatalf("unexpected options %+v", o)
	}
	pin := "sha256/" + strings.Repeat("A", 43) + "="
	o, err = parseFlags([]string{"--pin", pin}, func(k string) string {
		if k == "TRC_DATA_IN_TLS" {
			return "1"
		}
		return env[k]
	})
	if err != nil || !o.dataInTLS || o.pin == nil {
		t.Fatalf("TRC_DATA_IN_TLS: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{}, {"--secret", "x"}, {"--secret", "x", "--remote", "h:1", "--local", "l:1", "--data-in-tls"}, {"--secret", "x", "--remote", "h:1"}, {"--secret", strings.Repeat("s", maxSecretLen+1), "--remote", "h:1", "--local", "l:1"}} {
		if _, err := parseFlags(bad, func(string) string { return "" }); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

// A pin whose base64 starts with "/" (one gateway key in 64) parses, as does curl's
// "sha256//" form of it and of any other pin.
func TestParsePinWithLeadingSlash(t *testing.T) {
	sum := make([]byte, 32)
	sum[0] = 0xfc // base64 "/..."
	b64 := base64.StdEncoding.EncodeToString(sum)
	if b64[0] != '/' {
		t.Fatalf("test pin %q does not start with /", b64)
	}
	for _, pin := range []string{"sha256/" + b64, "sha256//" + b64} {
		got, err := parsePin(pin)
		if err != nil || !bytes.Equal(got, sum) {
			t.Fatalf("%s: %x, %v", pin, got, err)
		}
	}
	other := base64.StdEncoding.EncodeToString(make([]byte, 32))
	if got, err := parsePin("sha256//" + other); err != nil || len(got) != 32 {
		t.Fatalf("curl form: %v", err)
	}
	if _, err := parsePin("sha256/" + b64[1:]); err == nil {
		t.Fatal("a truncated pin was accepted")
	}
}
