package gatewaydns

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// gatewayZone is what the agent writes for a managed domain plus what a user may add.
func loadExampleZone(r *redisProc) {
	r.hset("example.com.",
		"www", `{"a":[{"ip":"10.0.0.5","ttl":3600}],"aaaa":[{"ip":"2001:db8::5","ttl":3600}]}`,
		"__owner__", `{"txt":[{"text":"{\"identity\":\"node\",\"owner\":\"user1\"}","ttl":600}]}`,
		"*", `{"a":[{"ip":"10.0.0.99"}]}`,
		"alias", `{"cname":[{"host":"www.example.com."}]}`,
		"chain", `{"cname":[{"host":"alias.example.com."}]}`,
		"mail", `{"mx":[{"host":"mx.example.com.","preference":10}]}`,
		"mx", `{"a":[{"ip":"10.0.0.25"}]}`,
		"_sip._tcp", `{"srv":[{"priority":1,"weight":5,"port":5060,"target":"www.example.com."}]}`,
		"deep.ent", `{"txt":[{"text":"deep"}]}`,
		"sub", `{"ns":[{"host":"ns.sub.example.com."}]}`,
		"ns.sub", `{"a":[{"ip":"10.0.0.53"}]}`,
		"caa", `{"caa":[{"flag":0,"tag":"issue","value":"letsencrypt.org"}]}`,
	)
}

func TestLookups(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	r.hset("deleg.example.com.", "@", `{"a":[{"ip":"10.9.9.9"}],"soa":{"ns":"ns.deleg.example.com.","mbox":"admin.deleg.example.com.","refresh":100}}`,
		"leaf.ent", `{"a":[{"ip":"10.9.9.8"}]}`)
	g, _ := startPlugin(t, testConfig(r.addr()))

	type want struct {
		rcode  int
		aa     bool
		answer []string // substrings, one per answer RR in order
		ns     string   // substring of the first authority RR ("" = empty section)
		extra  string   // substring of the first additional RR ("" = empty section)
	}
	cases := []struct {
		name  string
		qtype uint16
		want  want
	}{
		{"www.example.com.", dns.TypeA, want{dns.RcodeSuccess, true, []string{"300\tIN\tA\t10.0.0.5"}, "NS", ""}},
		{"WWW.Example.COM.", dns.TypeAAAA, want{dns.RcodeSuccess, true, []string{"AAAA\t2001:db8::5"}, "NS", ""}},
		// NODATA carries the SOA, also for HTTPS/SVCB which the Go plugins answered NOTIMP.
		{"www.example.com.", dns.TypeHTTPS, want{dns.RcodeSuccess, true, nil, "SOA\tns1.gw.test. hostmaster.gw.test.", ""}},
		{"www.example.com.", dns.TypeSVCB, want{dns.RcodeSuccess, true, nil, "SOA", ""}},
		{"www.example.com.", dns.TypePTR, want{dns.RcodeSuccess, true, nil, "SOA", ""}},
		// the apex without any @ field: synthesised SOA and NS
		{"example.com.", dns.TypeSOA, want{dns.RcodeSuccess, true, []string{"SOA\tns1.gw.test. hostmaster.gw.test."}, "NS", ""}},
		{"example.com.", dns.TypeNS, want{dns.RcodeSuccess, true, []string{"NS\tns1.gw.test.", "NS\tns2.gw.test."}, "", ""}},
		{"example.com.", dns.TypeA, want{dns.RcodeSuccess, true, nil, "SOA", ""}},
		// wildcard by label; an empty non-terminal (in a zone without `*`) is NODATA
		{"anything.example.com.", dns.TypeA, want{dns.RcodeSuccess, true, []string{"anything.example.com.\t300\tIN\tA\t10.0.0.99"}, "NS", ""}},
		{"any.thing.example.com.", dns.TypeA, want{dns.RcodeSuccess, true, []string{"any.thing.example.com.\t300\tIN\tA\t10.0.0.99"}, "NS", ""}},
		{"ent.deleg.example.com.", dns.TypeA, want{dns.RcodeSuccess, true, nil, "SOA", ""}},
		{"deep.ent.example.com.", dns.TypeTXT, want{dns.RcodeSuccess, true, []string{"\"deep\""}, "NS", ""}},
		{"x.deep.ent.example.com.", dns.TypeTXT, want{dns.RcodeNameError, true, nil, "SOA", ""}},
		{"__owner__.example.com.", dns.TypeTXT, want{dns.RcodeSuccess, true, []string{`owner\"`}, "NS", ""}},
		// in-zone CNAME chains are followed
		{"chain.example.com.", dns.TypeA, want{dns.RcodeSuccess, true, []string{"CNAME\talias.example.com.", "CNAME\twww.example.com.", "A\t10.0.0.5"}, "NS", ""}},
		{"mail.example.com.", dns.TypeMX, want{dns.RcodeSuccess, true, []string{"MX\t10 mx.example.com."}, "NS", "A\t10.0.0.25"}},
		{"_sip._tcp.example.com.", dns.TypeSRV, want{dns.RcodeSuccess, true, []string{"SRV\t1 5 5060 www.example.com."}, "NS", "10.0.0.5"}},
		{"caa.example.com.", dns.TypeCAA, want{dns.RcodeSuccess, true, []string{"CAA\t0 issue \"letsencrypt.org\""}, "NS", ""}},
		// delegation with glue, not authoritative
		{"host.sub.example.com.", dns.TypeA, want{dns.RcodeSuccess, false, nil, "NS\tns.sub.example.com.", "A\t10.0.0.53"}},
		// a longer zone wins; its stored SOA is used (serial still content-derived)
		{"deleg.example.com.", dns.TypeSOA, want{dns.RcodeSuccess, true, []string{"SOA\tns.deleg.example.com. admin.deleg.example.com. "}, "NS", ""}},
		{"nope.deleg.example.com.", dns.TypeA, want{dns.RcodeNameError, true, nil, "SOA\tns.deleg.example.com.", ""}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s", c.name, dns.TypeToString[c.qtype]), func(t *testing.T) {
			m := ask(t, g, c.name, c.qtype)
			if m.Rcode != c.want.rcode || m.Authoritative != c.want.aa {
				t.Fatalf("rcode %s aa %v, want %s aa %v\n%v", dns.RcodeToString[m.Rcode], m.Authoritative,
					dns.RcodeToString[c.want.rcode], c.want.aa, m)
			}
			if len(m.Answer) != len(c.want.answer) {
				t.Fatalf("answer %v, want %v", rrStrings(m.Answer), c.want.answer)
			}
			for i, w := range c.want.answer {
				if !strings.Contains(m.Answer[i].String(), w) {
					t.Fatalf("answer[%d] %q lacks %q", i, m.Answer[i], w)
				}
			}
			checkSection(t, "authority", m.Ns, c.want.ns)
			checkSection(t, "additional", m.Extra, c.want.extra)
		})
	}
}

func checkSection(t *testing.T, what string, rrs []dns.RR, want string) {
	t.Helper()
	if want == "" {
		if len(rrs) != 0 {
			t.Fatalf("%s: %v, want empty", what, rrStrings(rrs))
		}
		return
	}
	if len(rrs) == 0 || !strings.Contains(rrs[0].String(), want) {
		t.Fatalf("%s: %v, want first to contain %q", what, rrStrings(rrs), want)
	}
}

// nextHandler records that a query was passed on.
type nextHandler struct{ called int }

func (n *nextHandler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	n.called++
	return dns.RcodeServerFailure, nil
}
func (n *nextHandler) Name() string { return "next" }

func TestNamesOutsideZonesGoToNextPluginOrAreRefused(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	r.hset("zone", "example.com", `{"Owner":"u"}`) // the Go daemon's bookkeeping hash: not a zone
	r.hset("managed_domains", "www.example.com", "u")
	g, _ := startPlugin(t, testConfig(r.addr()))
	if m := ask(t, g, "other.org.", dns.TypeA); m.Rcode != dns.RcodeRefused {
		t.Fatalf("no next plugin: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
	next := &nextHandler{}
	g.Next = next
	ask(t, g, "other.org.", dns.TypeA)
	ask(t, g, "com.", dns.TypeSOA)
	ask(t, g, "www.example.com.", dns.TypeA)
	if next.called != 2 {
		t.Fatalf("next plugin called %d times, want 2 (only names outside the zone)", next.called)
	}
	if got := g.current().names(); strings.Join(got, ",") != "example.com." {
		t.Fatalf("zones %v", got)
	}
}

func TestZoneTransferIsOffByDefault(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	g, _ := startPlugin(t, testConfig(r.addr()))
	if m := askTCP(t, g, "example.com.", dns.TypeAXFR); m.Rcode != dns.RcodeRefused {
		t.Fatalf("AXFR without `transfer to`: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
	cfg := testConfig(r.addr())
	cfg.transferTo = mustCIDRs(t, "10.240.0.2/32")
	g2, _ := startPlugin(t, cfg)
	if m := askTCP(t, g2, "example.com.", dns.TypeAXFR); m.Rcode != dns.RcodeRefused {
		t.Fatalf("AXFR from a client not listed: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
	cfg3 := testConfig(r.addr())
	cfg3.transferTo = mustCIDRs(t, "10.240.0.0/24")
	g3, _ := startPlugin(t, cfg3)
	m := askTCP(t, g3, "example.com.", dns.TypeAXFR)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) < 10 {
		t.Fatalf("AXFR from an allowed client: %s with %d records", dns.RcodeToString[m.Rcode], len(m.Answer))
	}
	if m.Answer[0].Header().Rrtype != dns.TypeSOA || m.Answer[len(m.Answer)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("AXFR must start and end with the SOA: %v", rrStrings(m.Answer))
	}
}

func mustCIDRs(t *testing.T, cidrs ...string) []*net.IPNet {
	t.Helper()
	cfg := defaultConfig()
	if err := parseTransfer(cfg, append([]string{"to"}, cidrs...)); err != nil {
		t.Fatal(err)
	}
	return cfg.transferTo
}

// askTCP asks over a TCP response writer whose client is 10.240.0.1 and collects every
// message written (an AXFR is several).
func askTCP(t *testing.T, h plugin.Handler, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	w := &collectWriter{ResponseWriter: &test.ResponseWriter{TCP: true, RemoteIP: "10.240.0.1"}}
	rc, err := h.ServeDNS(context.Background(), w, req)
	if err != nil {
		t.Fatal(err)
	}
	out := new(dns.Msg)
	out.SetRcode(req, rc)
	for _, m := range w.msgs {
		out.Rcode = m.Rcode
		out.Answer = append(out.Answer, m.Answer...)
	}
	return out
}

type collectWriter struct {
	dns.ResponseWriter
	msgs []*dns.Msg
}

func (c *collectWriter) WriteMsg(m *dns.Msg) error { c.msgs = append(c.msgs, m); return nil }

func TestPushUpdates(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	g, _ := startPlugin(t, testConfig(r.addr()))
	ctx := context.Background()
	visible := func(name string, qtype uint16, want string) func() error {
		return func() error {
			m := ask(t, g, name, qtype)
			got := strings.Join(rrStrings(m.Answer), "|")
			if want == "" && m.Rcode == dns.RcodeNameError {
				return nil
			}
			if want != "" && strings.Contains(got, want) {
				return nil
			}
			return fmt.Errorf("%s: rcode %s answer %q, want %q", name, dns.RcodeToString[m.Rcode], got, want)
		}
	}
	// The resync period is 60s: everything below must arrive by push.
	r.hset("example.com.", "new", `{"a":[{"ip":"10.1.1.1"}]}`)
	eventually(t, 5*time.Second, "HSET of a new owner", visible("new.example.com.", dns.TypeA, "10.1.1.1"))
	r.hset("example.com.", "new", `{"a":[{"ip":"10.1.1.2"}]}`)
	eventually(t, 5*time.Second, "HSET changing an owner", visible("new.example.com.", dns.TypeA, "10.1.1.2"))
	if err := r.cli.HDel(ctx, "example.com.", "new", "*").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "HDEL", visible("new.example.com.", dns.TypeA, ""))
	r.hset("fresh.test.", "@", `{"a":[{"ip":"10.2.2.2"}]}`)
	eventually(t, 5*time.Second, "a new zone", visible("fresh.test.", dns.TypeA, "10.2.2.2"))
	if err := r.cli.Rename(ctx, "fresh.test.", "renamed.test.").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "RENAME of a zone", visible("renamed.test.", dns.TypeA, "10.2.2.2"))
	eventually(t, 5*time.Second, "old name gone", func() error {
		if m := ask(t, g, "fresh.test.", dns.TypeA); m.Rcode != dns.RcodeRefused {
			return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		return nil
	})
	// A zone key overwritten with a string is no longer a zone.
	if err := r.cli.Set(ctx, "renamed.test.", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "SET over a zone", func() error {
		if m := ask(t, g, "renamed.test.", dns.TypeA); m.Rcode != dns.RcodeRefused {
			return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		return nil
	})
	if err := r.cli.Del(ctx, "example.com.").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "DEL of a zone", func() error {
		if m := ask(t, g, "www.example.com.", dns.TypeA); m.Rcode != dns.RcodeRefused {
			return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		return nil
	})
	r.hset("exp.test.", "@", `{"a":[{"ip":"10.3.3.3"}]}`)
	eventually(t, 5*time.Second, "zone before expiry", visible("exp.test.", dns.TypeA, "10.3.3.3"))
	if err := r.cli.PExpire(ctx, "exp.test.", 50*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "expired zone", func() error {
		if m := ask(t, g, "exp.test.", dns.TypeA); m.Rcode != dns.RcodeRefused {
			return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		return nil
	})
}

// The agent's channel works even where keyspace notifications are off (a redis that does
// not allow CONFIG SET, or an operator that turned them off again).
func TestAgentChannel(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	g, _ := startPlugin(t, testConfig(r.addr()))
	ctx := context.Background()
	if err := r.cli.ConfigSet(ctx, "notify-keyspace-events", "").Err(); err != nil {
		t.Fatal(err)
	}
	r.hset("example.com.", "quiet", `{"a":[{"ip":"10.4.4.4"}]}`)
	if err := r.cli.Publish(ctx, AgentChannel, "Example.COM").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "change announced on "+AgentChannel, func() error {
		if m := ask(t, g, "quiet.example.com.", dns.TypeA); len(m.Answer) != 1 {
			return fmt.Errorf("answer %v", rrStrings(m.Answer))
		}
		return nil
	})
	r.hset("another.test.", "@", `{"a":[{"ip":"10.4.4.5"}]}`)
	if err := r.cli.Publish(ctx, AgentChannel, "*").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "full resync asked on "+AgentChannel, func() error {
		if m := ask(t, g, "another.test.", dns.TypeA); len(m.Answer) != 1 {
			return fmt.Errorf("answer %v", rrStrings(m.Answer))
		}
		return nil
	})
}

// A managed redis may forbid CONFIG: the plugin says so once and keeps working through the
// agent's channel and the resync.
func TestWorksWhereConfigIsForbidden(t *testing.T) {
	r := startRedis(t, "--rename-command", "CONFIG", "")
	loadExampleZone(r)
	g, s := startPlugin(t, testConfig(r.addr()))
	eventually(t, 5*time.Second, "CONFIG refusal noted", func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.errOnce["get"] {
			return fmt.Errorf("no warning recorded")
		}
		return nil
	})
	r.hset("example.com.", "later", `{"a":[{"ip":"10.8.8.8"}]}`)
	if err := r.cli.Publish(context.Background(), AgentChannel, "example.com.").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "change announced on "+AgentChannel, func() error {
		if m := ask(t, g, "later.example.com.", dns.TypeA); len(m.Answer) != 1 {
			return fmt.Errorf("answer %v", rrStrings(m.Answer))
		}
		return nil
	})
}

func TestKeyspaceEventsAreEnabledKeepingOtherFlags(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	if err := r.cli.ConfigSet(ctx, "notify-keyspace-events", "El").Err(); err != nil {
		t.Fatal(err)
	}
	startPlugin(t, testConfig(r.addr()))
	eventually(t, 5*time.Second, "notify-keyspace-events extended", func() error {
		v := r.cli.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
		for _, c := range "lKgh$xe" {
			if !strings.ContainsRune(v, c) {
				return fmt.Errorf("flags %q lack %q", v, c)
			}
		}
		return nil
	})
}

// Redis restarting empty (no persistence) and FLUSHALL (which sends no keyspace events)
// are both caught: the first by the resync on reconnect, the second by the periodic one.
func TestResyncAfterRestartAndFlush(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	cfg := testConfig(r.addr())
	cfg.resync = 300 * time.Millisecond
	g, _ := startPlugin(t, cfg)
	if m := ask(t, g, "www.example.com.", dns.TypeA); len(m.Answer) != 1 {
		t.Fatalf("before restart: %v", m)
	}
	r.restart()
	eventually(t, 5*time.Second, "zone gone after redis restarted empty", func() error {
		if m := ask(t, g, "www.example.com.", dns.TypeA); m.Rcode != dns.RcodeRefused {
			return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		return nil
	})
	// The restarted redis lost its notify-keyspace-events; the plugin sets it again and
	// changes arrive by push again.
	eventually(t, 5*time.Second, "keyspace events re-enabled", func() error {
		if v := r.cli.ConfigGet(context.Background(), "notify-keyspace-events").Val()["notify-keyspace-events"]; !strings.Contains(v, "K") {
			return fmt.Errorf("flags %q", v)
		}
		return nil
	})
	r.hset("back.test.", "@", `{"a":[{"ip":"10.5.5.5"}]}`)
	eventually(t, 5*time.Second, "new zone after restart", func() error {
		if m := ask(t, g, "back.test.", dns.TypeA); len(m.Answer) != 1 {
			return fmt.Errorf("answer %v", rrStrings(m.Answer))
		}
		return nil
	})
	if err := r.cli.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "zone gone after FLUSHALL", func() error {
		if m := ask(t, g, "back.test.", dns.TypeA); m.Rcode != dns.RcodeRefused {
			return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		return nil
	})
}

// While redis is unreachable the plugin keeps answering from the last loaded zones.
func TestServesFromMemoryWhileRedisIsDown(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	g, _ := startPlugin(t, testConfig(r.addr()))
	r.stop()
	for i := 0; i < 50; i++ {
		if m := ask(t, g, "www.example.com.", dns.TypeA); len(m.Answer) != 1 || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d with redis down: %v", i, m)
		}
	}
}

func TestServfailUntilFirstLoad(t *testing.T) {
	g := &GatewayDNS{}
	if m := ask(t, g, "www.example.com.", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("before any load: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	if g.Ready() {
		t.Fatal("ready before any load")
	}
}

// A malformed owner, element, zone key or oversized value never hides the rest.
func TestMalformedDataIsSkipped(t *testing.T) {
	r := startRedis(t)
	r.hset("bad.test.",
		"good", `{"a":[{"ip":"10.6.6.6"}]}`,
		"broken", `{"a":[{"ip":`,
		"wrongtypes", `{"a":{"ip":"10.0.0.1"},"txt":[{"text":"still here"}]}`,
		"has space", `{"a":[{"ip":"10.0.0.1"}]}`,
		"badns", `{"ns":[{"host":"a..b"}]}`,
		"big", `{"txt":[{"text":"`+strings.Repeat("x", 5000)+`"}]}`,
		"@", `{"soa":{"ns":5}}`,
	)
	r.hset("Upper.Test.", "@", `{"a":[{"ip":"10.0.0.1"}]}`)
	r.hset(".", "@", `{"a":[{"ip":"10.0.0.1"}]}`)
	if err := r.cli.Set(context.Background(), "string.test.", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(r.addr())
	cfg.maxValueBytes = 1000
	skippedBefore := testutil.ToFloat64(skippedTotal)
	g, _ := startPlugin(t, cfg)
	// 6 owner problems in bad.test., the uppercase key and the root key
	if got := testutil.ToFloat64(skippedTotal) - skippedBefore; got != 8 {
		t.Errorf("skipped_data_total grew by %v, want 8", got)
	}
	if m := ask(t, g, "good.bad.test.", dns.TypeA); len(m.Answer) != 1 {
		t.Fatalf("good owner: %v", m)
	}
	if m := ask(t, g, "wrongtypes.bad.test.", dns.TypeTXT); len(m.Answer) != 1 {
		t.Fatalf("valid type next to a malformed one: %v", m)
	}
	for _, n := range []string{"broken.bad.test.", "badns.bad.test."} {
		if m := ask(t, g, n, dns.TypeA); m.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: %s, want NXDOMAIN", n, dns.RcodeToString[m.Rcode])
		}
	}
	if m := ask(t, g, "big.bad.test.", dns.TypeTXT); m.Rcode != dns.RcodeNameError {
		t.Fatalf("oversized value served: %v", m)
	}
	if m := ask(t, g, "bad.test.", dns.TypeSOA); len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), "ns1.gw.test.") {
		t.Fatalf("malformed stored SOA must fall back to the synthesised one: %v", m)
	}
	if got := strings.Join(g.current().names(), ","); got != "bad.test." {
		t.Fatalf("zones %q: the root, uppercase and string keys must not be zones", got)
	}
}

// Queries run while zones change: run with -race, the swap must be clean and every answer
// one of the two versions.
func TestConcurrentQueriesDuringUpdates(t *testing.T) {
	r := startRedis(t)
	loadExampleZone(r)
	g, _ := startPlugin(t, testConfig(r.addr()))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req := new(dns.Msg)
				req.SetQuestion("www.example.com.", dns.TypeA)
				rec := dnstest.NewRecorder(&test.ResponseWriter{})
				if _, err := g.ServeDNS(context.Background(), rec, req); err != nil || rec.Msg == nil {
					errs <- fmt.Errorf("query failed: %v", err)
					return
				}
				if len(rec.Msg.Answer) != 1 {
					errs <- fmt.Errorf("answer %v", rec.Msg.Answer)
					return
				}
				ip := rec.Msg.Answer[0].(*dns.A).A.String()
				if ip != "10.0.0.5" && ip != "10.0.0.6" {
					errs <- fmt.Errorf("unexpected address %s", ip)
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		ip := []string{"10.0.0.5", "10.0.0.6"}[i%2]
		r.hset("example.com.", "www", `{"a":[{"ip":"`+ip+`"}]}`, fmt.Sprintf("n%d", i), `{"a":[{"ip":"10.7.7.7"}]}`)
		if i%50 == 0 {
			if err := r.cli.Publish(context.Background(), AgentChannel, "*").Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, 5*time.Second, "last write visible", func() error {
		if m := ask(t, g, "n199.example.com.", dns.TypeA); len(m.Answer) != 1 {
			return fmt.Errorf("answer %v", m.Answer)
		}
		return nil
	})
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
