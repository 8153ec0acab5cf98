package router

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"tfgateway.dev/dataplane/router/internal/persource"
	"tfgateway.dev/dataplane/router/internal/testutil"
)

// The attacker runs in child processes (this test binary again, see TestMain): 20,000
// connections need 20,000 descriptors on the client side alone, more than one process may
// hold here (RLIMIT_NOFILE's hard limit), and the router must be measured on its own.
const floodEnv = "TFROUTER_TEST_FLOOD" // "<source ip> <router addr> <count> http|tls"

func TestMain(m *testing.M) {
	if spec := os.Getenv(floodEnv); spec != "" {
		os.Exit(flood(spec))
	}
	os.Exit(m.Run())
}

// flood opens count connections from the source address, each sending only the start of a
// request head, and holds them until stdin closes; it prints "held N unreached U" once
// every connect returned (N: those not reset by the router before the dial returned; U:
// dials that failed otherwise than by the router's reset, which under load can be a
// timeout or a full listen backlog: the router never saw them).
func flood(spec string) int {
	f := strings.Fields(spec)
	count, _ := strconv.Atoi(f[2])
	raiseNoFile(uint64(count) + 64)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(f[0])}, Timeout: 10 * time.Second}
	held := make([]net.Conn, 0, count)
	payload := []byte("GET / HTTP/1.1\r\nHost: victim.exa")
	if f[3] == "tls" { // a TLS record header announcing a 512-byte ClientHello, and its start
		payload = []byte("\x16\x03\x01\x02\x00\x01\x00\x01")
	}
	var opened, unreached int
	for range count {
		c, err := d.Dial("tcp", f[1])
		if err != nil {
			if !errors.Is(err, syscall.ECONNRESET) {
				unreached++
			}
			continue
		}
		opened++
		_, _ = c.Write(payload)
		held = append(held, c)
	}
	fmt.Printf("held %d unreached %d\n", opened, unreached)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the test closes stdin
	for _, c := range held {
		_ = c.Close()
	}
	return 0
}

func raiseNoFile(want uint64) {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < want {
		l.Cur = min(want, l.Max)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

type attacker struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	held  chan [2]int // held, unreached
}

func startAttacker(t *testing.T, src, addr string, count int, mode string) *attacker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %s", floodEnv, src, addr, count, mode))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &attacker{cmd: cmd, stdin: stdin, held: make(chan [2]int, 1)}
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		var n [2]int
		_, _ = fmt.Sscanf(line, "held %d unreached %d", &n[0], &n[1])
		a.held <- n
	}()
	t.Cleanup(a.stop)
	return a
}

func (a *attacker) stop() {
	_ = a.stdin.Close()
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
}

// One source (127.0.0.2) opens 20,000 connections that never finish their request head, in
// two processes of 10,000. The router holds at most the per-source share of them (the rest
// are reset at once), so the global backstop (MaxPending, 20,000 by default) is never
// reached, and every request from ten other sources, sent while the flood is held, is served.
// With per-source shares as large as the backstop this test fails: the flood takes every
// pending slot (and the router's descriptors) and the others are refused.
func TestOneSourceFloodLeavesOthersServed(t *testing.T) {
	raiseNoFile(20000)
	rd := testutil.StartRedis(t)
	_, port := named(t, "site")
	r := startRouter(t, rd.Port, "", Options{TargetPolicy: allowAll})
	setRoute(t, rd, "victim.example", "127.0.0.1", "", 0, port)
	testutil.WaitFor(t, 5*time.Second, "route pushed", func() bool { return r.Table.Len() == 1 })
	share := r.opt.PendingPerSource

	const perProcess = 10000
	attackers := []*attacker{
		startAttacker(t, "127.0.0.2", r.http(), perProcess, "http"),
		startAttacker(t, "127.0.0.2", r.tls(), perProcess, "tls"),
	}
	held, unreached := 0, 0
	for _, a := range attackers {
		select {
		case n := <-a.held:
			held += n[0]
			unreached += n[1]
		case <-time.After(60 * time.Second):
			t.Fatal("the attacker did not finish connecting")
		}
	}
	flooder := netip.MustParseAddr("127.0.0.2")
	refused := func() float64 {
		return promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, NoRoute, persource.TooManyPending.String())) +
			promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerTLS, NoRoute, persource.TooManyPending.String()))
	}
	t.Logf("flood connected: %d held on the attackers' side, %d never reached the router", held, unreached)
	// Connecting takes long under load (45 s seen): the first admitted connections may reach
	// the 10 s peek timeout before the last are dialled, and leave.
	timedOut := func() float64 {
		return promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, NoRoute, kindPeekTimeout)) +
			promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerTLS, NoRoute, kindPeekTimeout))
	}
	// every connection that reached the router was admitted (and is held, or timed out) or reset
	testutil.WaitFor(t, 30*time.Second, "every connection that reached the router accepted", func() bool {
		_, pending := r.sources.Count(flooder)
		return float64(pending)+refused()+timedOut() >= float64(2*perProcess-unreached)
	})
	conns, pending := r.sources.Count(flooder)
	t.Logf("flood: %d connections from one source (%d still open on its side, %d never reached the router); router holds %d (%d peeking), reset %v, timed out %v",
		2*perProcess, held, unreached, conns, pending, refused(), timedOut())
	if unreached > perProcess/10 {
		t.Fatalf("%d of %d connections never reached the router", unreached, 2*perProcess)
	}
	if pending > share || conns > share {
		t.Fatalf("one source holds %d pending / %d connections, share %d", pending, conns, share)
	}

	// Ten other sources, fifty requests each, all at once, while the flood is held.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for i := range 10 {
		src := fmt.Sprintf("127.0.0.%d", 3+i)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body, err := getFrom(src, r.http(), "victim.example")
				if err != nil || body != "site victim.example " {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s: %q %v", src, body, err))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of 500 requests from other sources not served while one source floods, e.g. %s", len(failed), failed[0])
	}
	if n := len(r.pending); n > share {
		t.Fatalf("%d connections pending over all sources, the flooder's share is %d", n, share)
	}
	// The flood ends: nothing of it is left in the router.
	for _, a := range attackers {
		a.stop()
	}
	testutil.WaitFor(t, 20*time.Second, "flood released", func() bool { return r.sources.Len() == 0 && len(r.pending) == 0 })
}

// getFrom is get from a given local address.
func getFrom(src, addr, host string) (string, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return request(c, host, "/")
}

// A source's open connections are capped too (here at 3): the fourth is reset at once and
// counted, the first three keep working, and another source is not affected.
func TestConnectionsPerSource(t *testing.T) {
	_, port := named(t, "site")
	r := startRouter(t, 0, fmt.Sprintf("[server.services.\"a.example\"]\naddr = \"127.0.0.1\"\nhttpport = %d\n", port),
		Options{ConnsPerSource: 3})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	var open []net.Conn
	for range 3 { // routed and idle: they count as open, no longer as peeking
		c, err := d.Dial("tcp", r.http())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
		open = append(open, c)
	}
	testutil.WaitFor(t, 5*time.Second, "three routed", func() bool {
		c, p := r.sources.Count(netip.MustParseAddr("127.0.0.2"))
		return c == 3 && p == 0
	})
	if !refusedAtOnce(t, d, r.http()) {
		t.Fatal("the fourth connection of one source was not refused")
	}
	if v := promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, NoRoute, persource.TooManyConns.String())); v != 1 {
		t.Fatalf("refusals counted: %v", v)
	}
	if body, err := getFrom("127.0.0.3", r.http(), "a.example"); err != nil || body != "site a.example " {
		t.Fatalf("another source: %q %v", body, err)
	}
	for _, c := range open { // the admitted ones were answered
		if _, err := readResponse(c); err != nil {
			t.Fatalf("an admitted connection: %v", err)
		}
	}
}

// request sends one HTTP/1.0 request on c and returns the body of the answer.
func request(c net.Conn, host, path string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return "", err
	}
	return readResponse(c)
}

func readResponse(c net.Conn) (string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// refusedAtOnce dials addr and reports whether the router closed (reset) the connection
// without an answer within 2 s; the reset often arrives before the dial itself returns.
func refusedAtOnce(t *testing.T, d net.Dialer, addr string) bool {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatal(err)
		}
		return true
	}
	defer c.Close()
	return closedWithin(c, 2*time.Second)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Refused connections are never logged one by one: 300 refusals give one summary line per
// period (two if they straddle one), with the counts and the source refused most.
func TestRefusalsSummarisedNotLogged(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := startRouter(t, 0, "", Options{PendingPerSource: 2, SummaryEvery: time.Second, Log: log})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range 2 { // the share: two unfinished heads
		c, err := d.Dial("tcp", r.http())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET / HTTP/1.1\r\n")
	}
	testutil.WaitFor(t, 5*time.Second, "two pending", func() bool {
		_, p := r.sources.Count(netip.MustParseAddr("127.0.0.2"))
		return p == 2
	})
	for range 300 {
		if c, err := d.Dial("tcp", r.http()); err == nil {
			c.Close()
		}
	}
	kind := persource.TooManyPending.String()
	testutil.WaitFor(t, 5*time.Second, "300 refusals counted", func() bool {
		return promtest.ToFloat64(r.Metrics.Errors.WithLabelValues(ListenerHTTP, NoRoute, kind)) == 300
	})
	// the refusals may straddle a period: one or two summary lines, adding up to 300
	var lines []string
	sum := 0
	testutil.WaitFor(t, 5*time.Second, "summary lines for all 300", func() bool {
		lines, sum = nil, 0
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "127.0.0.2") || strings.Contains(l, "refused") {
				lines = append(lines, l)
				if m := regexp.MustCompile(`pending_per_source=(\d+)`).FindStringSubmatch(l); m != nil {
					n, _ := strconv.Atoi(m[1])
					sum += n
				}
			}
		}
		return sum == 300
	})
	if len(lines) > 2 {
		t.Fatalf("%d log lines about 300 refusals (want one summary per period):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, "refused connections over per-source limits") || !strings.Contains(l, "top_source=127.0.0.2/32") {
			t.Fatalf("not a summary naming the source: %q", l)
		}
	}
}
