package gatewaydns

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"
)

// agentWrite queues one change the way the agent makes it: a transaction that sets the
// field and names the zone on the agent's channel (so the plugin hears of it twice, by
// keyspace notification and by PUBLISH).
func agentWrite(ctx context.Context, pipe redis.Pipeliner, zone, field, value string) {
	pipe.Do(ctx, "MULTI")
	pipe.Do(ctx, "HSET", zone, field, value)
	pipe.Do(ctx, "PUBLISH", AgentChannel, zone)
	pipe.Do(ctx, "EXEC")
}

func answersA(t testing.TB, g *GatewayDNS, name, ip string) func() error {
	return func() error {
		m := ask(t, g, name, dns.TypeA)
		if got := strings.Join(rrStrings(m.Answer), "|"); !strings.Contains(got, "\t"+ip) {
			return fmt.Errorf("%s: rcode %s answer %q, want %s", name, dns.RcodeToString[m.Rcode], got, ip)
		}
		return nil
	}
}

// A burst of agent writes into one zone is folded into a few reloads, and every write is
// served at the end. The pause is long so that the whole burst lands within it even on a
// loaded machine: the count of reloads does not depend on timing.
func TestBurstIntoOneZoneIsFoldedIntoFewReloads(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	r.hset("burst.test.", "@", `{"a":[{"ip":"10.0.0.1"}]}`)
	cfg := testConfig(r.addr())
	cfg.coalesce = 3 * time.Second
	g, s := startPlugin(t, cfg)

	// An isolated change: at most two reloads (the agent's PUBLISH of the same change may add
	// one after the pause; and the full load that follows subscribing may have covered it).
	pipe := r.cli.Pipeline()
	agentWrite(ctx, pipe, "burst.test.", "first", `{"a":[{"ip":"10.1.0.1"}]}`)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "isolated change", answersA(t, g, "first.burst.test.", "10.1.0.1"))
	before := s.zoneLoads.Load()
	if before > 2 {
		t.Fatalf("%d zone reloads for one change", before)
	}

	// The burst is spread out like the agent's (batches a few ms apart), so that without
	// pacing each batch would be a reload of its own.
	const n, batch = 600, 60
	for start := 0; start < n; start += batch {
		pipe = r.cli.Pipeline()
		for i := start; i < start+batch; i++ {
			agentWrite(ctx, pipe, "burst.test.", fmt.Sprintf("h%d", i), fmt.Sprintf(`{"a":[{"ip":"10.2.%d.%d"}]}`, i/250, i%250+1))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // shapes the load; nothing waits on it
	}
	eventually(t, 15*time.Second, "last write of the burst", answersA(t, g, fmt.Sprintf("h%d.burst.test.", n-1),
		fmt.Sprintf("10.2.%d.%d", (n-1)/250, (n-1)%250+1)))
	for i := 0; i < n; i++ {
		if err := answersA(t, g, fmt.Sprintf("h%d.burst.test.", i), fmt.Sprintf("10.2.%d.%d", i/250, i%250+1))(); err != nil {
			t.Fatal(err)
		}
	}
	// 1200 events: at most the reloads of three pauses (the first change's follow-up, the
	// burst, a straggler), not one per event.
	if got := s.zoneLoads.Load() - before; got > 3 {
		t.Fatalf("%d zone reloads for a burst of %d agent writes (%d events)", got, n, 2*n)
	}
}

// With coalesce off every change reloads its zone at once, as before pacing existed; the
// result is the same zone.
func TestCoalesceOffStillServesEveryWrite(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	cfg := testConfig(r.addr())
	cfg.coalesce = 0
	g, _ := startPlugin(t, cfg)
	pipe := r.cli.Pipeline()
	for i := 0; i < 200; i++ {
		agentWrite(ctx, pipe, "off.test.", fmt.Sprintf("h%d", i), fmt.Sprintf(`{"a":[{"ip":"10.3.0.%d"}]}`, i+1))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		eventually(t, 5*time.Second, "burst write", answersA(t, g, fmt.Sprintf("h%d.off.test.", i), fmt.Sprintf("10.3.0.%d", i+1)))
	}
}

// A zone hash with more fields than max_fields_per_zone is not read: the version loaded
// before keeps being served (by a zone reload and by a full resync alike), a zone never
// loaded is not served, and once the hash is small enough again it is loaded.
func TestOversizedZoneKeepsLastGoodVersion(t *testing.T) {
	r := startRedis(t)
	ctx := context.Background()
	r.hset("big.test.", "@", `{"a":[{"ip":"10.0.0.1"}]}`, "www", `{"a":[{"ip":"10.0.0.2"}]}`)
	cfg := testConfig(r.addr())
	cfg.maxFields = 20
	g, s := startPlugin(t, cfg)
	eventually(t, 5*time.Second, "small zone", answersA(t, g, "www.big.test.", "10.0.0.2"))

	// Grow past the limit (the change to www comes with it).
	kv := []string{"www", `{"a":[{"ip":"10.9.9.9"}]}`}
	for i := 0; i < 25; i++ {
		kv = append(kv, fmt.Sprintf("h%d", i), `{"a":[{"ip":"10.1.1.1"}]}`)
	}
	r.hset("big.test.", kv...)
	eventually(t, 5*time.Second, "zone refused", func() error {
		if n := s.oversized.Load(); n != 1 {
			return fmt.Errorf("%d zones refused", n)
		}
		return nil
	})
	if err := answersA(t, g, "www.big.test.", "10.0.0.2")(); err != nil {
		t.Fatalf("last good version not served: %v", err)
	}
	if m := ask(t, g, "h1.big.test.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Fatalf("a field of the oversized hash is served: %v", m)
	}

	// A full resync keeps it too, and refuses a new oversized zone (not served at all).
	r.hset("huge.test.", kv...)
	fulls := s.fullLoads.Load()
	if err := r.cli.Publish(ctx, AgentChannel, "*").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "full resync refusing both zones", func() error {
		if s.fullLoads.Load() == fulls || s.oversized.Load() != 2 {
			return fmt.Errorf("%d zones refused", s.oversized.Load())
		}
		return nil
	})
	if err := answersA(t, g, "www.big.test.", "10.0.0.2")(); err != nil {
		t.Fatalf("after a full resync, last good version not served: %v", err)
	}
	if m := ask(t, g, "www.huge.test.", dns.TypeA); m.Rcode != dns.RcodeRefused {
		t.Fatalf("an oversized zone never loaded is answered: %v", m)
	}

	// Shrunk back under the limit: loaded, with the new content.
	fields := make([]string, 0, 25)
	for i := 0; i < 25; i++ {
		fields = append(fields, fmt.Sprintf("h%d", i))
	}
	if err := r.cli.HDel(ctx, "big.test.", fields...).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "zone loaded again", answersA(t, g, "www.big.test.", "10.9.9.9"))
	if n := s.oversized.Load(); n != 1 {
		t.Fatalf("%d zones refused, want 1 (huge.test.)", n)
	}
}
