package redisfeed

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tfgateway.dev/dataplane/router/internal/routes"
	"tfgateway.dev/dataplane/router/internal/testutil"
)

func allowAll(string) error { return nil }

type feedRun struct {
	table   *routes.Table
	resyncs atomic.Int64
	fetches atomic.Int64 // round trips reading changed hosts
	fetched atomic.Int64 // hosts they read
}

func startFeed(t *testing.T, rd *testutil.Redis, period time.Duration, check routes.TargetPolicy) *feedRun {
	t.Helper()
	fr := &feedRun{table: routes.NewTable(nil, "CATCH_ALL")}
	client := redis.NewClient(&redis.Options{Addr: rd.Addr(), DialTimeout: time.Second, MaxRetries: 1})
	f := &Feed{Client: client, Table: fr.table, Resync: period, Log: slog.New(slog.DiscardHandler), Check: check,
		OnResync: func(int, error) { fr.resyncs.Add(1) },
		OnFetch:  func(n int, _ error) { fr.fetches.Add(1); fr.fetched.Add(int64(n)) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; _ = client.Close() })
	testutil.WaitFor(t, 10*time.Second, "first resync", func() bool { return fr.resyncs.Load() > 0 })
	return fr
}

func (fr *feedRun) addr(host string) string {
	s, _, ok := fr.table.Lookup(host)
	if !ok {
		return ""
	}
	return s.Addr
}

func TestPushUpdates(t *testing.T) {
	rd := testutil.StartRedis(t)
	ctx := context.Background()
	rd.Client.Set(ctx, "/tcprouter/service/old.example", testutil.ServiceValue("old.example", "10.0.0.1", "", 443, 80), 0)
	fr := startFeed(t, rd, time.Hour, nil) // no periodic resync: only push can explain updates
	if fr.addr("old.example") != "10.0.0.1" {
		t.Fatal("initial resync missed an existing key")
	}
	set := func(host, addr string) {
		rd.Client.Set(ctx, "/tcprouter/service/"+host, testutil.ServiceValue(host, addr, "", 443, 80), 0)
	}
	set("www.example.com", "10.0.0.5")
	testutil.WaitFor(t, 5*time.Second, "SET pushed", func() bool { return fr.addr("www.example.com") == "10.0.0.5" })
	set("www.example.com", "10.0.0.6")
	testutil.WaitFor(t, 5*time.Second, "update pushed", func() bool { return fr.addr("www.example.com") == "10.0.0.6" })
	rd.Client.Del(ctx, "/tcprouter/service/www.example.com")
	testutil.WaitFor(t, 5*time.Second, "DEL pushed", func() bool { return fr.addr("www.example.com") == "" })
	rd.Client.Expire(ctx, "/tcprouter/service/old.example", 50*time.Millisecond)
	testutil.WaitFor(t, 5*time.Second, "expiry pushed", func() bool { return fr.addr("old.example") == "" })

	// defence in depth: a redis entry pointing at loopback never becomes a route
	set("evil.example", "127.0.0.1")
	set("marker.example", "10.0.0.7")
	testutil.WaitFor(t, 5*time.Second, "marker", func() bool { return fr.addr("marker.example") == "10.0.0.7" })
	if fr.addr("evil.example") != "" {
		t.Fatal("loopback target from redis accepted")
	}

	// the agent's channel works even where keyspace events are switched off
	rd.Client.ConfigSet(ctx, "notify-keyspace-events", "")
	set("chan.example", "10.0.0.8")
	if fr.addr("chan.example") != "" {
		t.Fatal("update seen without any notification?")
	}
	rd.Client.Publish(ctx, ProxyChannel, "chan.example")
	testutil.WaitFor(t, 5*time.Second, "channel pushed", func() bool { return fr.addr("chan.example") == "10.0.0.8" })
}

func TestNotificationFlagsUnion(t *testing.T) {
	rd := testutil.StartRedis(t)
	ctx := context.Background()
	rd.Client.ConfigSet(ctx, "notify-keyspace-events", "Elh")
	startFeed(t, rd, time.Hour, allowAll)
	got := rd.Client.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
	for _, c := range "ElhK$gxe" {
		if !strings.ContainsRune(got, c) {
			t.Fatalf("notify-keyspace-events = %q, missing %q", got, c)
		}
	}
	if UnionFlags("AK", "K$gxe") != "AK" {
		t.Fatal("A already implies $gxe")
	}
}

func TestResyncAfterFlushAndRestart(t *testing.T) {
	rd := testutil.StartRedis(t)
	ctx := context.Background()
	fr := startFeed(t, rd, 200*time.Millisecond, allowAll)
	rd.Client.Set(ctx, "/tcprouter/service/a.example", testutil.ServiceValue("a.example", "127.0.0.1", "", 1, 2), 0)
	testutil.WaitFor(t, 5*time.Second, "a", func() bool { return fr.addr("a.example") != "" })
	// FLUSHALL sends no keyspace event per key: the periodic resync must notice
	rd.Client.FlushAll(ctx)
	testutil.WaitFor(t, 5*time.Second, "a gone after FLUSHALL", func() bool { return fr.addr("a.example") == "" })

	rd.Client.Set(ctx, "/tcprouter/service/b.example", testutil.ServiceValue("b.example", "127.0.0.1", "", 1, 2), 0)
	testutil.WaitFor(t, 5*time.Second, "b", func() bool { return fr.addr("b.example") != "" })
	// restart redis empty (as after a crash without persistence) with a key the feed can
	// only learn by resyncing after it reconnects
	rd.Stop()
	rd.Start()
	c := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer c.Close()
	c.Set(ctx, "/tcprouter/service/c.example", testutil.ServiceValue("c.example", "127.0.0.1", "", 1, 2), 0)
	testutil.WaitFor(t, 15*time.Second, "resync after restart", func() bool {
		return fr.addr("c.example") != "" && fr.addr("b.example") == ""
	})
	// and push works again (the feed re-enabled keyspace events on the new server)
	c.Set(ctx, "/tcprouter/service/d.example", testutil.ServiceValue("d.example", "127.0.0.1", "", 1, 2), 0)
	testutil.WaitFor(t, 5*time.Second, "push after restart", func() bool { return fr.addr("d.example") != "" })
}
