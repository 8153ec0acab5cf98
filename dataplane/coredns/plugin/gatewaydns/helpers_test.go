package gatewaydns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"
)

const redisServerPath = "/usr/bin/redis-server"

// redisProc is a real redis-server owned by one test, on a free loopback port.
type redisProc struct {
	t      testing.TB
	port   int
	dir    string
	extra  []string // more redis-server arguments
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	cli    *redis.Client
}

// startRedis starts redis-server, failing the test loudly when it is missing: these tests
// are about behaviour against a real redis and are never skipped.
func startRedis(t testing.TB, extra ...string) *redisProc {
	t.Helper()
	if _, err := os.Stat(redisServerPath); err != nil {
		t.Fatalf("redis-server is required at %s for these tests: %v", redisServerPath, err)
	}
	r := &redisProc{t: t, dir: t.TempDir(), extra: extra}
	// Other jobs on the machine may take the free port before redis binds it: then another.
	for try := 0; ; try++ {
		r.port = freePort(t)
		r.launch()
		if r.ready(10 * time.Second) {
			break
		}
		r.stop()
		if try == 2 || !r.portTaken() {
			t.Fatalf("redis-server did not answer PING on port %d within 10s: %s", r.port, r.logTail())
		}
	}
	r.cli = redis.NewClient(&redis.Options{Addr: r.addr(), Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() {
		r.cli.Close()
		r.stop()
	})
	return r
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (r *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisProc) logPath() string { return filepath.Join(r.dir, "redis.log") }

func (r *redisProc) launch() {
	r.t.Helper()
	r.cmd = exec.Command(redisServerPath, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", r.logPath())
	r.cmd.Args = append(r.cmd.Args, r.extra...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exited) }(r.cmd)
	r.exited = exited
}

// ready polls PING until redis answers (true), exits or the time is up (false).
func (r *redisProc) ready(within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-r.exited:
			return false
		default:
		}
		if r.ping() == nil {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

func (r *redisProc) ping() error {
	c, err := net.DialTimeout("tcp", r.addr(), 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "+PONG\r\n" {
		return fmt.Errorf("no PONG: %q %v", buf[:n], err)
	}
	return nil
}

func (r *redisProc) portTaken() bool {
	b, _ := os.ReadFile(r.logPath())
	return strings.Contains(string(b), "Address already in use")
}

func (r *redisProc) logTail() string {
	b, _ := os.ReadFile(r.logPath())
	return string(b[max(0, len(b)-1000):])
}

func (r *redisProc) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// restart kills redis (losing every key: no persistence) and starts it on the same port.
func (r *redisProc) restart() {
	r.t.Helper()
	r.stop()
	r.launch()
	if !r.ready(10 * time.Second) {
		r.t.Fatalf("redis-server did not come back on port %d within 10s: %s", r.port, r.logTail())
	}
}

func (r *redisProc) hset(zone string, kv ...string) {
	r.t.Helper()
	args := make([]any, len(kv))
	for i, v := range kv {
		args[i] = v
	}
	if err := r.cli.HSet(context.Background(), zone, args...).Err(); err != nil {
		r.t.Fatalf("HSET %s: %v", zone, err)
	}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testConfig is the configuration the tests run the plugin with.
func testConfig(addr string) *config {
	cfg := defaultConfig()
	cfg.addr = addr
	cfg.nameservers = []string{"ns1.gw.test.", "ns2.gw.test."}
	cfg.hostmaster = "hostmaster.gw.test."
	return cfg
}

// startPlugin runs a GatewayDNS with its syncer against redis until the test ends, and
// waits for the first full load. hook, if given, is called by every whole read before it
// reports (in the reading goroutine).
func startPlugin(t testing.TB, cfg *config, hook ...func(*wholeResult)) (*GatewayDNS, *syncer) {
	t.Helper()
	g := &GatewayDNS{transferAll: cfg.transferAll, transferTo: cfg.transferTo}
	s := newSyncer(cfg, g)
	if len(hook) > 0 {
		s.readHook = hook[0]
	}
	ctx, cancel := context.WithCancel(context.Background())
	wg := s.run(ctx)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		s.client.Close()
	})
	select {
	case <-s.loadedOnce:
	case <-time.After(10 * time.Second):
		t.Fatal("first full load from redis did not happen within 10s")
	}
	return g, s
}

// ask sends one query through handler h, as CoreDNS's server would, and returns the reply.
// A handler that only returns an rcode (REFUSED, SERVFAIL) gets the reply the server writes.
func ask(t testing.TB, h plugin.Handler, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), qtype)
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rc, err := h.ServeDNS(context.Background(), rec, req)
	if err != nil {
		t.Fatalf("%s %s: ServeDNS error %v", name, dns.TypeToString[qtype], err)
	}
	if rec.Msg != nil {
		return rec.Msg
	}
	m := new(dns.Msg)
	m.SetRcode(req, rc)
	return m
}

// rrStrings renders a section for comparison, in a stable order.
func rrStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

// subscribed waits until the plugin follows keyspace events of zone: a change by a writer
// that names nothing is served. The full load that follows subscribing is then done too
// (full loads go before zone reads, one read at a time), so later changes are followed by
// push alone.
func subscribed(t testing.TB, r *redisProc, g *GatewayDNS, zone string) {
	t.Helper()
	r.hset(zone, "subscribed-probe", `{"a":[{"ip":"10.255.255.254"}]}`)
	eventually(t, 5*time.Second, "plugin subscribed", answersA(t, g, "subscribed-probe."+zone, "10.255.255.254"))
}
