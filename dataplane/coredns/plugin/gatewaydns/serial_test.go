package gatewaydns

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func soaOf(t *testing.T, g *GatewayDNS, zone string) *dns.SOA {
	t.Helper()
	m := ask(t, g, zone, dns.TypeSOA)
	if len(m.Answer) != 1 {
		t.Fatalf("SOA %s: %v", zone, m)
	}
	return m.Answer[0].(*dns.SOA)
}

// waitSerialAfter waits until zone's serial comes after prev (RFC 1982) and returns it.
func waitSerialAfter(t *testing.T, g *GatewayDNS, zone string, prev uint32) uint32 {
	t.Helper()
	var s uint32
	eventually(t, 10*time.Second, "serial increases", func() error {
		if s = soaOf(t, g, zone).Serial; !serialAfter(s, prev) {
			return fmt.Errorf("serial %d not after %d", s, prev)
		}
		return nil
	})
	return s
}

// Serials only increase, across changes, restarts and replicas reading the same redis, and
// stay put while the content does; they start from the unix time.
func TestSerialsOnlyIncrease(t *testing.T) {
	r := startRedis(t)
	r.hset("example.com.", "www", `{"a":[{"ip":"10.0.0.1"}]}`)
	start := uint32(time.Now().Unix())
	a, _ := startPlugin(t, testConfig(r.addr()))
	s1 := soaOf(t, a, "example.com.").Serial
	if serialAfter(start, s1) {
		t.Fatalf("first serial %d is before the unix time %d", s1, start)
	}
	prev := s1
	for i := 2; i <= 4; i++ { // changes within one second still increase the serial
		r.hset("example.com.", "www", fmt.Sprintf(`{"a":[{"ip":"10.0.0.%d"}]}`, i))
		prev = waitSerialAfter(t, a, "example.com.", prev)
	}
	// Redis forgot the script (SCRIPT FLUSH; a restart does the same): it is sent again, and
	// the serial is still kept in redis.
	if err := r.cli.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	r.hset("example.com.", "www", `{"a":[{"ip":"10.0.0.5"}]}`)
	prev = waitSerialAfter(t, a, "example.com.", prev)
	if kept, _ := r.cli.HGet(context.Background(), SerialsKey, "example.com.").Result(); !strings.HasPrefix(kept, fmt.Sprint(prev)+" ") {
		t.Fatalf("after SCRIPT FLUSH redis keeps %q, the plugin serves serial %d", kept, prev)
	}
	// A replica (or a restart) on the same redis and content: the same serial.
	b, _ := startPlugin(t, testConfig(r.addr()))
	if s := soaOf(t, b, "example.com."); s.Serial != prev {
		t.Fatalf("replica serves serial %d, the first %d", s.Serial, prev)
	}
	// Back to content served before: still a new, higher serial.
	r.hset("example.com.", "www", `{"a":[{"ip":"10.0.0.1"}]}`)
	sa := waitSerialAfter(t, a, "example.com.", prev)
	sb := waitSerialAfter(t, b, "example.com.", prev)
	if sa != sb {
		t.Fatalf("replicas disagree after a change: %d and %d", sa, sb)
	}
	// A restart whose content changed while it was down continues above the stored serial.
	if err := r.cli.HSet(context.Background(), "example.com.", "new", `{"a":[{"ip":"10.0.0.9"}]}`).Err(); err != nil {
		t.Fatal(err)
	}
	waitSerialAfter(t, a, "example.com.", sa)
	c, _ := startPlugin(t, testConfig(r.addr()))
	if s := soaOf(t, c, "example.com.").Serial; !serialAfter(s, sa) {
		t.Fatalf("after restart serial %d, not after %d", s, sa)
	}
}

// Without EVAL (a redis that forbids scripts), serials still increase within the process.
func TestSerialsWithoutRedisScripts(t *testing.T) {
	r := startRedis(t, "--rename-command", "EVAL", "")
	r.hset("example.com.", "www", `{"a":[{"ip":"10.0.0.1"}]}`)
	g, _ := startPlugin(t, testConfig(r.addr()))
	prev := soaOf(t, g, "example.com.").Serial
	for i := 2; i <= 3; i++ {
		r.hset("example.com.", "www", fmt.Sprintf(`{"a":[{"ip":"10.0.0.%d"}]}`, i))
		prev = waitSerialAfter(t, g, "example.com.", prev)
	}
}

func TestSerialArithmetic(t *testing.T) {
	for _, c := range []struct {
		a, b uint32
		want bool
	}{{2, 1, true}, {1, 2, false}, {1, 1, false}, {0, 0xffffffff, true}, {0x80000001, 1, false}, {0x7fffffff, 0, true}} {
		if got := serialAfter(c.a, c.b); got != c.want {
			t.Errorf("serialAfter(%d, %d) = %v", c.a, c.b, got)
		}
	}
}

// Negative answers carry the SOA with TTL min(SOA TTL, MINIMUM) (RFC 2308 §3); the SOA
// itself keeps its TTL.
func TestNegativeAnswersUseSOAMinimum(t *testing.T) {
	r := startRedis(t)
	r.hset("example.com.", "www", `{"a":[{"ip":"10.0.0.1"}]}`)
	g, _ := startPlugin(t, testConfig(r.addr()))
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"nope.example.com.", dns.TypeA}, {"www.example.com.", dns.TypeAAAA}} {
		m := ask(t, g, q.name, q.qtype)
		if len(m.Ns) != 1 {
			t.Fatalf("%s: authority %v", q.name, m.Ns)
		}
		soa := m.Ns[0].(*dns.SOA)
		if soa.Hdr.Ttl != 60 || soa.Minttl != 60 {
			t.Fatalf("%s: negative SOA TTL %d MINIMUM %d, want 60 (min(300, 60))", q.name, soa.Hdr.Ttl, soa.Minttl)
		}
	}
	if soa := soaOf(t, g, "example.com."); soa.Hdr.Ttl != 300 {
		t.Fatalf("SOA answer TTL %d, want its own 300", soa.Hdr.Ttl)
	}
}

// ACME DNS-01 through the gateway's DNS: the router writes `_acme-challenge` TXT owners
// (also at the apex, for a wildcard certificate) and names the field on the agent channel;
// they are served within milliseconds with their low TTL, read field by field.
func TestACMEChallengesAreServedAtOnce(t *testing.T) {
	r := startRedis(t)
	kv := []string{"@", `{"a":[{"ip":"10.0.0.1"}]}`}
	for i := 0; i < 500; i++ {
		kv = append(kv, fmt.Sprintf("h%d", i), `{"a":[{"ip":"10.0.0.2"}]}`)
	}
	r.hset("example.com.", kv...)
	g, s := startPlugin(t, testConfig(r.addr()))
	ctx := context.Background()
	write := func(field, value string, hint bool) time.Time {
		t.Helper()
		start := time.Now()
		pipe := r.cli.TxPipeline()
		pipe.HSet(ctx, "example.com.", field, value)
		if hint {
			pipe.Publish(ctx, AgentChannel, "example.com. "+field)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		return start
	}
	txt := func(name string, want ...string) func() error {
		return func() error {
			m := ask(t, g, name, dns.TypeTXT)
			var got []string
			for _, rr := range m.Answer {
				if rr.Header().Ttl != 10 {
					return fmt.Errorf("TTL %d, want 10", rr.Header().Ttl)
				}
				got = append(got, strings.Join(rr.(*dns.TXT).Txt, ""))
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return fmt.Errorf("TXT %v, want %v", got, want)
			}
			return nil
		}
	}
	fieldLoads := s.fieldLoads.Load()
	// A wildcard certificate's challenge at the apex of the zone: two tokens (*.example.com
	// and example.com), a name beside the apex, so no apex rebuild.
	start := write("_acme-challenge", `{"txt":[{"text":"tok-wild","ttl":10},{"text":"tok-apex","ttl":10}]}`, true)
	eventually(t, 2*time.Second, "apex challenge served", txt("_acme-challenge.example.com.", "tok-wild", "tok-apex"))
	t.Logf("apex challenge visible after %s", time.Since(start))
	write("_acme-challenge.h7", `{"txt":[{"text":"tok-h7","ttl":10}]}`, true)
	eventually(t, 2*time.Second, "subdomain challenge served", txt("_acme-challenge.h7.example.com.", "tok-h7"))
	if s.fieldLoads.Load() == fieldLoads {
		t.Fatal("named fields were not read field by field")
	}
	// A writer that names nothing is followed too (keyspace event, whole read).
	write("_acme-challenge.h8", `{"txt":[{"text":"tok-h8","ttl":10}]}`, false)
	eventually(t, 5*time.Second, "challenge written without naming the field", txt("_acme-challenge.h8.example.com.", "tok-h8"))
	// Removing the challenge removes the name.
	pipe := r.cli.TxPipeline()
	pipe.HDel(ctx, "example.com.", "_acme-challenge")
	pipe.Publish(ctx, AgentChannel, "example.com. _acme-challenge")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "challenge removed", func() error {
		if m := ask(t, g, "_acme-challenge.example.com.", dns.TypeTXT); m.Rcode != dns.RcodeNameError {
			return fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		return nil
	})
}
