package redisfeed

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"tfgateway.dev/dataplane/router/internal/routes"
	"tfgateway.dev/dataplane/router/internal/testutil"
)

const svcKey = routes.KeyPrefix

// readCalls is how many GET and MGET commands redis served since the last CONFIG RESETSTAT.
func readCalls(t *testing.T, rd *testutil.Redis) int {
	t.Helper()
	info, err := rd.Client.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_get:", "cmdstat_mget:"} {
			rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd+"calls=")
			if !ok {
				continue
			}
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				t.Fatalf("commandstats line %q: %v", line, err)
			}
			total += n
		}
	}
	return total
}

// The agent's way of writing: per change a SET and a PUBLISH, many changes pipelined. Each
// change makes two events; the feed must read them in far fewer round trips.
func TestBurstReadInFewRoundTrips(t *testing.T) {
	const n = 2000
	rd := testutil.StartRedis(t)
	ctx := context.Background()
	fr := startFeed(t, rd, time.Hour, allowAll)
	if err := rd.Client.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	fetches0 := fr.fetches.Load()
	pipe := rd.Client.Pipeline()
	for i := range n {
		host := fmt.Sprintf("bulk%d.example", i)
		pipe.Set(ctx, svcKey+host, testutil.ServiceValue(host, "10.0.0.1", "", 443, 80), 0)
		pipe.Publish(ctx, ProxyChannel, host)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "every route of the burst", func() bool { return fr.table.Len() == n })
	for i := range n {
		if host := fmt.Sprintf("bulk%d.example", i); fr.addr(host) != "10.0.0.1" {
			t.Fatalf("%s = %q", host, fr.addr(host))
		}
	}
	fetches := fr.fetches.Load() - fetches0
	calls := readCalls(t, rd)
	t.Logf("%d events read in %d round trips (redis counted %d GET+MGET)", 2*n, fetches, calls)
	if calls != int(fetches) {
		t.Fatalf("redis served %d reads, the feed reports %d", calls, fetches)
	}
	if fetches > n/5 { // 2n events: at least 10 per round trip on average
		t.Fatalf("%d round trips for %d events", fetches, 2*n)
	}
}

// Mixed bursts (sets, updates, deletes, a host deleted and set again, undecodable values,
// events for keys that never existed) end with the table equal to redis.
func TestMixedBurstsEndEqualToRedis(t *testing.T) {
	rd := testutil.StartRedis(t)
	ctx := context.Background()
	fr := startFeed(t, rd, time.Hour, nil)
	rng := rand.New(rand.NewPCG(7, 11))
	want := map[string]string{} // host -> addr in redis (valid routes only)
	hosts := make([]string, 150)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d.example", i)
	}
	for range 8 {
		pipe := rd.Client.Pipeline()
		for range 600 {
			host := hosts[rng.IntN(len(hosts))]
			switch op := rng.IntN(10); {
			case op < 5:
				addr := fmt.Sprintf("10.%d.%d.%d", rng.IntN(250), rng.IntN(250), 1+rng.IntN(250))
				pipe.Set(ctx, svcKey+host, testutil.ServiceValue(host, addr, "", 443, 80), 0)
				want[host] = addr
			case op < 8:
				pipe.Del(ctx, svcKey+host)
				delete(want, host)
			case op < 9: // not a route: must not survive as the old value
				pipe.Set(ctx, svcKey+host, "not json", 0)
				delete(want, host)
			default: // the agent's channel alone, nothing changed
				pipe.Publish(ctx, ProxyChannel, host)
			}
			if rng.IntN(2) == 0 {
				pipe.Publish(ctx, ProxyChannel, host)
			}
		}
		// the ordering case named in the design: deleted, then set again in one burst
		pipe.Del(ctx, svcKey+hosts[0])
		pipe.Set(ctx, svcKey+hosts[0], testutil.ServiceValue(hosts[0], "10.9.9.9", "", 443, 80), 0)
		pipe.Publish(ctx, ProxyChannel, hosts[0])
		want[hosts[0]] = "10.9.9.9"
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// redis itself must hold what the test thinks (a check of the test)
	for _, host := range hosts {
		v, err := rd.Client.Get(ctx, svcKey+host).Result()
		if _, ok := want[host]; ok != (err == nil && v != "not json") {
			t.Fatalf("test bookkeeping wrong for %s: %q %v", host, v, err)
		}
	}
	mismatch := func() string {
		if fr.table.Len() != len(want) {
			return fmt.Sprintf("table holds %d routes, redis %d", fr.table.Len(), len(want))
		}
		for _, host := range hosts {
			if got := fr.addr(host); got != want[host] {
				return fmt.Sprintf("%s: table %q, redis %q", host, got, want[host])
			}
		}
		return ""
	}
	deadline := time.Now().Add(10 * time.Second)
	for msg := mismatch(); msg != ""; msg = mismatch() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Batching must not delay a lone change: each is read at once, by itself.
func TestIsolatedChangesAppliedAtOnce(t *testing.T) {
	rd := testutil.StartRedis(t)
	ctx := context.Background()
	fr := startFeed(t, rd, time.Hour, allowAll)
	for i := range 20 {
		host := fmt.Sprintf("lone%d.example", i)
		addr := fmt.Sprintf("10.0.1.%d", i+1)
		before := fr.fetched.Load()
		if i%2 == 0 { // keyspace event only
			rd.Client.Set(ctx, svcKey+host, testutil.ServiceValue(host, addr, "", 443, 80), 0)
		} else { // both events, as the agent writes
			pipe := rd.Client.TxPipeline()
			pipe.Set(ctx, svcKey+host, testutil.ServiceValue(host, addr, "", 443, 80), 0)
			pipe.Publish(ctx, ProxyChannel, host)
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		testutil.WaitFor(t, 2*time.Second, host, func() bool { return fr.addr(host) == addr })
		if i%2 == 0 {
			if got := fr.fetched.Load() - before; got != 1 {
				t.Fatalf("one SET made the feed read %d hosts", got)
			}
		}
		rd.Client.Del(ctx, svcKey+host)
		testutil.WaitFor(t, 2*time.Second, host+" deleted", func() bool { return fr.addr(host) == "" })
	}
}
