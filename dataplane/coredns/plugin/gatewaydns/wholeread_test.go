package gatewaydns

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	randv2 "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"
)

// hintedWrite changes fields of zone in one transaction that names them on the agent
// channel (`ZONE FIELD...`): value "" deletes the field.
func hintedWrite(t testing.TB, r *redisProc, zone string, kv ...string) {
	t.Helper()
	ctx := context.Background()
	pipe := r.cli.TxPipeline()
	var fields []string
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			pipe.HDel(ctx, zone, kv[i])
		} else {
			pipe.HSet(ctx, zone, kv[i], kv[i+1])
		}
		fields = append(fields, kv[i])
	}
	pipe.Publish(ctx, AgentChannel, zone+" "+strings.Join(fields, " "))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// A named change is served while a whole read of its zone is still running, and when that
// read's result arrives (read before the named change) it does not bring back the old value
// of the named field, while the change it was started for (by a writer that names nothing)
// is served.
func TestNamedChangesDoNotWaitForWholeReads(t *testing.T) {
	r := startRedis(t)
	kv := []string{"@", `{"a":[{"ip":"10.0.0.1"}]}`, "named", `{"a":[{"ip":"10.1.0.1"}]}`,
		"gone", `{"a":[{"ip":"10.1.0.2"}]}`}
	for i := 0; i < 200; i++ {
		kv = append(kv, fmt.Sprintf("h%d", i), `{"a":[{"ip":"10.0.0.2"}]}`)
	}
	r.hset("big.test.", kv...)
	// Whole reads that found the field "foreign" are held until released.
	var holding atomic.Bool
	holding.Store(true)
	reached := make(chan *wholeResult, 16)
	gate := make(chan struct{})
	g, _ := startPlugin(t, testConfig(r.addr()), func(res *wholeResult) {
		if rd := res.reads["big.test."]; holding.Load() && rd != nil && rd.hash["foreign"] != "" {
			reached <- res
			<-gate
		}
	})
	t.Cleanup(func() {
		holding.Store(false)
		close(gate)
	})

	// A writer that names nothing: its keyspace event starts a whole read, held here.
	r.hset("big.test.", "foreign", `{"a":[{"ip":"10.2.0.1"}]}`)
	select {
	case <-reached:
	case <-time.After(5 * time.Second):
		t.Fatal("no whole read of big.test. after a change in unknown fields")
	}
	// Named changes while that read is held: served at once.
	hintedWrite(t, r, "big.test.", "named", `{"a":[{"ip":"10.1.0.9"}]}`, "gone", "")
	eventually(t, 2*time.Second, "named change during a whole read", answersA(t, g, "named.big.test.", "10.1.0.9"))
	eventually(t, 2*time.Second, "named removal during a whole read", nxdomain(t, g, "gone.big.test."))
	if m := ask(t, g, "foreign.big.test.", dns.TypeA); len(m.Answer) != 0 {
		t.Fatalf("foreign change served before the whole read reported: %v", rrStrings(m.Answer))
	}

	// The held read reports; any later read stays held, so what follows is its result alone.
	gate <- struct{}{}
	eventually(t, 5*time.Second, "change by a writer that names nothing", answersA(t, g, "foreign.big.test.", "10.2.0.1"))
	if err := answersA(t, g, "named.big.test.", "10.1.0.9")(); err != nil {
		t.Fatalf("a whole read that began before a named change undid it: %v", err)
	}
	if err := nxdomain(t, g, "gone.big.test.")(); err != nil {
		t.Fatalf("a whole read that began before a named removal undid it: %v", err)
	}
}

func nxdomain(t testing.TB, g *GatewayDNS, name string) func() error {
	return func() error {
		if m := ask(t, g, name, dns.TypeA); m.Rcode != dns.RcodeNameError {
			return fmt.Errorf("%s: rcode %s, want NXDOMAIN", name, dns.RcodeToString[m.Rcode])
		}
		return nil
	}
}

// agentStyleWrite changes fields of zone as the agent does: WATCH, then a transaction with one
// HSET or HDEL per field ("" deletes) that names the fields it changes (a field already gone
// is not deleted again, nor named), retried when another writer came between.
func agentStyleWrite(t testing.TB, r *redisProc, zone string, kv ...string) {
	ctx := context.Background()
	want := map[string]string{}
	var order []string
	for i := 0; i < len(kv); i += 2 {
		if _, ok := want[kv[i]]; !ok {
			order = append(order, kv[i])
		}
		want[kv[i]] = kv[i+1]
	}
	for {
		err := r.cli.Watch(ctx, func(tx *redis.Tx) error {
			have, err := tx.HMGet(ctx, zone, order...).Result()
			if err != nil {
				return err
			}
			var named []string
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				for i, f := range order {
					switch {
					case want[f] != "":
						pipe.HSet(ctx, zone, f, want[f])
					case have[i] != nil:
						pipe.HDel(ctx, zone, f)
					default:
						continue
					}
					named = append(named, f)
				}
				if len(named) > 0 {
					pipe.Publish(ctx, AgentChannel, zone+" "+strings.Join(named, " "))
				}
				return nil
			})
			return err
		}, zone)
		if !errors.Is(err, redis.TxFailedErr) {
			if err != nil {
				t.Error(err)
			}
			return
		}
	}
}

// Writers that name their fields, writers that name nothing and writers that name the zone
// only change the same fields of one zone at once, while whole reads (by HSCAN: the zone is
// larger than scanAbove; slowed down at random) run: afterwards the served zone is exactly
// the zone built from redis. With frequent full resyncs among the changes, and with none
// (every change followed by push alone).
func TestMixedWritersConverge(t *testing.T) {
	for _, resync := range []time.Duration{300 * time.Millisecond, time.Hour} {
		t.Run("resync="+resync.String(), func(t *testing.T) { mixedWriters(t, resync) })
	}
}

func mixedWriters(t *testing.T, resync time.Duration) {
	r := startRedis(t)
	const zone = "mix.test."
	kv := []string{"@", `{"a":[{"ip":"10.0.0.1"}]}`}
	for i := 0; i < scanAbove+500; i++ {
		kv = append(kv, fmt.Sprintf("f%d", i), fmt.Sprintf(`{"a":[{"ip":"10.0.%d.%d"}]}`, i/250, i%250+1))
	}
	r.hset(zone, kv...)
	cfg := testConfig(r.addr())
	cfg.resync = resync
	var reads atomic.Int64
	g, s := startPlugin(t, cfg, func(*wholeResult) {
		reads.Add(1)
		time.Sleep(time.Duration(randv2.IntN(30)) * time.Millisecond)
	})
	subscribed(t, r, g, zone)
	ctx := context.Background()
	value := func(rnd *rand.Rand) string {
		if rnd.Intn(4) == 0 {
			return "" // delete
		}
		return fmt.Sprintf(`{"a":[{"ip":"10.%d.%d.%d"}],"txt":[{"text":"v%d"}]}`,
			1+rnd.Intn(200), rnd.Intn(250), 1+rnd.Intn(250), rnd.Intn(1000))
	}
	// Most changes hit a few fields, so that writers of all kinds meet on them; some hit any.
	field := func(rnd *rand.Rand) string {
		if rnd.Intn(4) == 0 {
			return fmt.Sprintf("f%d", rnd.Intn(scanAbove+600))
		}
		return fmt.Sprintf("f%d", rnd.Intn(40))
	}
	writers := map[string]func(rnd *rand.Rand){
		"names its fields": func(rnd *rand.Rand) {
			var kv []string
			for n := 1 + rnd.Intn(3); n > 0; n-- {
				kv = append(kv, field(rnd), value(rnd))
			}
			agentStyleWrite(t, r, zone, kv...)
		},
		"names nothing": func(rnd *rand.Rand) {
			f, v := field(rnd), value(rnd)
			if rnd.Intn(50) == 0 {
				f, v = "@", fmt.Sprintf(`{"a":[{"ip":"10.0.0.%d"}]}`, 1+rnd.Intn(250))
			}
			if v == "" {
				_ = r.cli.HDel(ctx, zone, f).Err()
			} else {
				_ = r.cli.HSet(ctx, zone, f, v).Err()
			}
		},
		"names the zone": func(rnd *rand.Rand) {
			f, v := field(rnd), value(rnd)
			pipe := r.cli.TxPipeline()
			if v == "" {
				pipe.HDel(ctx, zone, f)
			} else {
				pipe.HSet(ctx, zone, f, v)
			}
			pipe.Publish(ctx, AgentChannel, zone)
			_, _ = pipe.Exec(ctx)
		},
	}
	var wg sync.WaitGroup
	seed := int64(1)
	for name, write := range writers {
		seed++
		wg.Add(1)
		go func(rnd *rand.Rand) {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				write(rnd)
				time.Sleep(time.Duration(rnd.Intn(6)) * time.Millisecond)
			}
			t.Logf("writer that %s: done", name)
		}(rand.New(rand.NewSource(seed)))
	}
	wg.Wait()

	nolog := func(string, ...any) {}
	eventually(t, 15*time.Second, "served zone equal to the zone built from redis", func() error {
		fields, err := r.cli.HGetAll(ctx, zone).Result()
		if err != nil {
			return err
		}
		got := s.g.current().get(zone)
		if got == nil {
			return fmt.Errorf("zone not served")
		}
		want := buildZone(zone, fields, nil, cfg.zoneDefaults(), cfg.limits(), nolog)
		want.setSerial(got.zone.SOA.Serial)
		if a, b := zoneListing(t, got), zoneListing(t, want); a != b {
			return fmt.Errorf("served zone differs from redis:\n%s", firstDiff(a, b))
		}
		return nil
	})
	if reads.Load() < 3 {
		t.Fatalf("only %d whole reads: the test did not run reads among the changes", reads.Load())
	}
	if s.fieldLoads.Load() == 0 {
		t.Fatal("no change was read by field")
	}
	_ = g
}

// firstDiff shows the first line where two listings differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: served %q, redis %q", i, x, y)
		}
	}
	return "(equal)"
}
