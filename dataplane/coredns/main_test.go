package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	_ "github.com/coredns/coredns/core/dnsserver" // registers the "dns" server type
	"github.com/miekg/dns"
)

func TestDirectiveOrder(t *testing.T) {
	registered := map[string]bool{}
	for _, names := range caddy.ListPlugins() {
		for _, n := range names {
			registered[strings.TrimPrefix(n, "dns.")] = true
		}
	}
	for _, d := range directives {
		if !registered[d] {
			t.Errorf("directive %q is not registered by any imported plugin", d)
		}
	}
	pos := func(name string) int { return slices.Index(directives, name) }
	if !(pos("cache") < pos("gatewaydns") && pos("gatewaydns") < pos("acl") && pos("acl") < pos("forward")) {
		t.Fatalf("order must be cache < gatewaydns < acl < forward: %v", directives)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	for {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
}

// TestCorefileEndToEnd runs the assembled server from a Corefile: gatewaydns answers the
// names of its redis zones, forward (after it) gets everything else.
func TestCorefileEndToEnd(t *testing.T) {
	sock, cli := startRedis(t, "s3cret", 3)
	cli("HSET", "example.com.", "www", `{"a":[{"ip":"10.0.0.5"}]}`)

	upstream := startUpstream(t)
	port := freePort(t)
	readyPort := freePort(t)
	t.Setenv("TFGW_TEST_REDIS_PASSWORD", "s3cret")
	corefile := fmt.Sprintf(`.:%d {
		bind 127.0.0.1
		ready 127.0.0.1:%d
		errors
		gatewaydns {
			unix %s
			password {$TFGW_TEST_REDIS_PASSWORD}
			db 3
			nameservers ns1.gw.test.
		}
		forward . %s
	}`, port, readyPort, sock, upstream)
	instance, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), ServerTypeName: "dns"})
	if err != nil {
		t.Fatalf("start CoreDNS: %v", err)
	}
	t.Cleanup(func() { instance.ShutdownCallbacks(); _ = instance.Stop() })

	addr := "127.0.0.1:" + strconv.Itoa(port)
	ask := func(name string) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		c := &dns.Client{Timeout: time.Second}
		r, _, err := c.Exchange(m, addr)
		return r, err
	}
	waitFor(t, "ready endpoint", func() error {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(readyPort), time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("GET /ready HTTP/1.0\r\n\r\n"))
		buf := make([]byte, 64)
		n, _ := conn.Read(buf)
		if !strings.Contains(string(buf[:n]), " 200 ") {
			return fmt.Errorf("ready says %q", buf[:n])
		}
		return nil
	})
	r, err := ask("www.example.com.")
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.5" || !r.Authoritative {
		t.Fatalf("redis zone name: %v %v", r, err)
	}
	r, err = ask("nothere.example.com.")
	if err != nil || r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Fatalf("missing name in a redis zone must be NXDOMAIN with SOA, not forwarded: %v %v", r, err)
	}
	r, err = ask("www.elsewhere.org.")
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.99" {
		t.Fatalf("name outside every zone must be forwarded: %v %v", r, err)
	}
	cli("HSET", "example.com.", "www", `{"a":[{"ip":"10.0.0.6"}]}`)
	waitFor(t, "pushed change", func() error {
		r, err := ask("www.example.com.")
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.6" {
			return fmt.Errorf("%v %v", r, err)
		}
		return nil
	})
}

// startUpstream runs a stand-in upstream resolver for forward until the test ends: it
// answers every A query with 192.0.2.99. It returns its address.
func startUpstream(t *testing.T) string {
	t.Helper()
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream := &dns.Server{PacketConn: up, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
			A: net.IPv4(192, 0, 2, 99)}}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = upstream.ActivateAndServe() }()
	t.Cleanup(func() { _ = upstream.Shutdown() })
	return up.LocalAddr().String()
}

// TestACLLimitsRecursionOnly: acl after gatewaydns (as the NixOS module writes it when
// upstreams are set) refuses forwarding to clients outside the allowed networks, while every
// client still gets the gateway's own zones.
func TestACLLimitsRecursionOnly(t *testing.T) {
	sock, cli := startRedis(t, "s3cret", 0)
	cli("HSET", "example.com.", "www", `{"a":[{"ip":"10.0.0.5"}]}`)
	port := freePort(t)
	_, err := startCoreDNS(t, fmt.Sprintf(`.:%d {
		bind 127.0.0.1
		gatewaydns {
			unix %s
			password s3cret
		}
		acl {
			allow net 127.0.0.2/32
			block
		}
		forward . %s
	}`, port, sock, startUpstream(t)))
	if err != nil {
		t.Fatal(err)
	}
	ask := func(from, name string) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		c := &dns.Client{Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}}
		r, _, err := c.Exchange(m, "127.0.0.1:"+strconv.Itoa(port))
		return r, err
	}
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		waitFor(t, "zone answer for "+from, func() error {
			r, err := ask(from, "www.example.com.")
			if err != nil || len(r.Answer) != 1 || !r.Authoritative {
				return fmt.Errorf("%v %v", r, err)
			}
			return nil
		})
	}
	r, err := ask("127.0.0.2", "www.elsewhere.org.")
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.99" {
		t.Fatalf("allowed client must be forwarded: %v %v", r, err)
	}
	r, err = ask("127.0.0.1", "www.elsewhere.org.")
	if err != nil || r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Fatalf("other clients must be refused recursion: %v %v", r, err)
	}
}

// startRedis runs a redis-server with requirepass on a unix socket (and a loopback port)
// until the test ends; cli runs redis-cli against database db.
func startRedis(t *testing.T, password string, db int) (string, func(args ...string) string) {
	t.Helper()
	const redisServer = "/usr/bin/redis-server"
	if _, err := os.Stat(redisServer); err != nil {
		t.Fatalf("redis-server is required at %s: %v", redisServer, err)
	}
	sock := t.TempDir() + "/redis.sock"
	redis := exec.Command(redisServer, "--port", strconv.Itoa(freePort(t)), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", t.TempDir(), "--unixsocket", sock, "--requirepass", password)
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = redis.Process.Kill(); _ = redis.Wait() })
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-s", sock, "-a", password, "--no-auth-warning", "-n",
			strconv.Itoa(db)}, args...)...).CombinedOutput()
		if err != nil {
			return "error: " + string(out)
		}
		return string(out)
	}
	waitFor(t, "redis", func() error {
		if out := cli("PING"); !strings.Contains(out, "PONG") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	return sock, cli
}

// startCoreDNS starts a CoreDNS instance from corefile until the test ends.
func startCoreDNS(t *testing.T, corefile string) (*caddy.Instance, error) {
	t.Helper()
	instance, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), ServerTypeName: "dns"})
	if err == nil {
		t.Cleanup(func() { instance.ShutdownCallbacks(); _ = instance.Stop() })
	}
	return instance, err
}

// askA sends an A query to addr.
func askA(addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// TestRedisPasswordFile: the password comes from a file (a systemd credential); a wrong or
// missing file stops CoreDNS from starting, with an error that says why.
func TestRedisPasswordFile(t *testing.T) {
	sock, cli := startRedis(t, "fromfile", 0)
	cli("HSET", "example.com.", "www", `{"a":[{"ip":"10.0.0.7"}]}`)
	dir := t.TempDir()
	good, wrong := dir+"/good", dir+"/wrong"
	if err := os.WriteFile(good, []byte("fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrong, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	corefile := func(port int, file string) string {
		return fmt.Sprintf(".:%d {\n bind 127.0.0.1\n gatewaydns {\n  unix %s\n  password_file %s\n }\n}", port, sock, file)
	}
	for file, want := range map[string]string{wrong: "refuses the password of password_file " + wrong,
		dir + "/missing": "cannot read the redis password"} {
		if _, err := startCoreDNS(t, corefile(freePort(t), file)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("password_file %s: start error %v, want one saying %q", file, err, want)
		}
	}
	port := freePort(t)
	if _, err := startCoreDNS(t, corefile(port, good)); err != nil {
		t.Fatalf("start with the right password file: %v", err)
	}
	waitFor(t, "answer from redis", func() error {
		r, err := askA("127.0.0.1:"+strconv.Itoa(port), "www.example.com.", dns.TypeA)
		if err != nil || len(r.Answer) != 1 {
			return fmt.Errorf("%v %v", r, err)
		}
		return nil
	})
}

// TestSecondaryFollowsTransfers: a real secondary (CoreDNS's secondary plugin) transfers a
// redis zone from gatewaydns and follows its changes, because the serial only increases.
func TestSecondaryFollowsTransfers(t *testing.T) {
	sock, cli := startRedis(t, "pw", 0)
	// A 1 s refresh so the secondary polls the SOA quickly.
	cli("HSET", "example.com.", "@", `{"soa":{"ns":"ns1.gw.test.","mbox":"hostmaster.gw.test.","refresh":1,"retry":1,"expire":3600,"minttl":60}}`,
		"www", `{"a":[{"ip":"10.0.0.1"}]}`)
	primary := freePort(t)
	if _, err := startCoreDNS(t, fmt.Sprintf(".:%d {\n bind 127.0.0.1\n gatewaydns {\n  unix %s\n  password pw\n"+
		"  nameservers ns1.gw.test.\n  transfer to 127.0.0.1\n }\n}", primary, sock)); err != nil {
		t.Fatal(err)
	}
	secondary := freePort(t)
	if _, err := startCoreDNS(t, fmt.Sprintf("example.com:%d {\n bind 127.0.0.1\n secondary {\n  transfer from 127.0.0.1:%d\n }\n}",
		secondary, primary)); err != nil {
		t.Fatal(err)
	}
	serial := func(addr int) uint32 {
		r, err := askA("127.0.0.1:"+strconv.Itoa(addr), "example.com.", dns.TypeSOA)
		if err != nil || len(r.Answer) != 1 {
			return 0
		}
		return r.Answer[0].(*dns.SOA).Serial
	}
	follows := func(ip string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r, err := askA("127.0.0.1:"+strconv.Itoa(secondary), "www.example.com.", dns.TypeA)
			if err == nil && len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == ip && serial(secondary) == serial(primary) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("secondary does not serve %s with the primary's serial %d: %v %v (its serial %d)", ip,
					serial(primary), r, err, serial(secondary))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	follows("10.0.0.1")
	prev := serial(primary)
	for _, ip := range []string{"10.0.0.2", "10.0.0.3"} {
		cli("HSET", "example.com.", "www", fmt.Sprintf(`{"a":[{"ip":"%s"}]}`, ip))
		follows(ip)
		if s := serial(primary); int32(s-prev) <= 0 {
			t.Fatalf("serial went from %d to %d", prev, s)
		} else {
			prev = s
		}
	}
}

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisWithoutPasswordRefused: a redis that wants a password CoreDNS was not given stops
// CoreDNS at start (the appliance's redis always has one), instead of answering SERVFAIL.
func TestRedisWithoutPasswordRefused(t *testing.T) {
	sock, _ := startRedis(t, "s3cret", 0)
	corefile := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n gatewaydns {\n  unix %s\n }\n}", freePort(t), sock)
	_, err := startCoreDNS(t, corefile)
	if err == nil || !strings.Contains(err.Error(), "wants a password and none is configured") {
		t.Fatalf("start error %v, want one saying the password is missing", err)
	}
}
