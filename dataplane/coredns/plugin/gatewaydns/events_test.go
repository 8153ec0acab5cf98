package gatewaydns

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Transactions that name every field they change (as the agent writes them: HSETs, HDELs of
// existing fields, several fields at once) are applied field by field, and their keyspace
// events cause no whole read of the zone.
func TestNamedWritesNeedNoWholeRead(t *testing.T) {
	r := startRedis(t)
	const zone = "named.test."
	kv := []string{"@", `{"a":[{"ip":"10.0.0.1"}]}`}
	for i := 0; i < 300; i++ {
		kv = append(kv, fmt.Sprintf("h%d", i), `{"a":[{"ip":"10.0.0.2"}]}`)
	}
	r.hset(zone, kv...)
	cfg := testConfig(r.addr())
	cfg.resync = time.Hour
	g, s := startPlugin(t, cfg)
	subscribed(t, r, g, zone)
	loads := s.zoneLoads.Load()
	const n = 300
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
		switch i % 3 {
		case 0:
			hintedWrite(t, r, zone, fmt.Sprintf("h%d", i), fmt.Sprintf(`{"a":[{"ip":"%s"}]}`, ip))
		case 1: // two fields in one transaction
			hintedWrite(t, r, zone, fmt.Sprintf("h%d", i), fmt.Sprintf(`{"a":[{"ip":"%s"}]}`, ip),
				fmt.Sprintf("new%d", i), fmt.Sprintf(`{"a":[{"ip":"%s"}]}`, ip))
		case 2: // removal of an existing field
			hintedWrite(t, r, zone, fmt.Sprintf("h%d", i), "")
		}
		time.Sleep(time.Millisecond) // spread out like the agent's writes; nothing waits on it
	}
	eventually(t, 5*time.Second, "last change", nxdomain(t, g, fmt.Sprintf("h%d.%s", n-1, zone)))
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
		name := fmt.Sprintf("h%d.%s", i, zone)
		var err error
		switch i % 3 {
		case 0:
			err = answersA(t, g, name, ip)()
		case 1:
			if err = answersA(t, g, name, ip)(); err == nil {
				err = answersA(t, g, fmt.Sprintf("new%d.%s", i, zone), ip)()
			}
		case 2:
			err = nxdomain(t, g, name)()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// On a loaded machine the subscriber may be descheduled between a transaction's events
	// and its message for longer than nameGrace: a few reads may happen. Without
	// attribution every change (paced) would be one.
	if got := s.zoneLoads.Load() - loads; got > 5 {
		t.Fatalf("%d whole reads for %d named transactions", got, n)
	}
}

// Keyspace events that the message after them does not account for are another writer's:
// its change is served without waiting for a resync, also when it comes right before a
// named transaction of the same zone, or inside one that names fewer fields than it changes.
func TestEventsNotNamedAreFollowed(t *testing.T) {
	r := startRedis(t)
	const zone = "other.test."
	r.hset(zone, "@", `{"a":[{"ip":"10.0.0.1"}]}`, "a", `{"a":[{"ip":"10.0.0.2"}]}`)
	cfg := testConfig(r.addr())
	cfg.resync = time.Hour
	g, _ := startPlugin(t, cfg)
	subscribed(t, r, g, zone)
	ctx := context.Background()

	// Another writer's HSET, then at once (one pipeline, so nothing comes between them on
	// the subscription) a transaction that names its one field.
	pipe := r.cli.Pipeline()
	pipe.HSet(ctx, zone, "foreign", `{"a":[{"ip":"10.2.0.1"}]}`)
	pipe.Do(ctx, "MULTI")
	pipe.Do(ctx, "HSET", zone, "a", `{"a":[{"ip":"10.2.0.2"}]}`)
	pipe.Do(ctx, "PUBLISH", AgentChannel, zone+" a")
	pipe.Do(ctx, "EXEC")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "named change", answersA(t, g, "a."+zone, "10.2.0.2"))
	eventually(t, 5*time.Second, "change just before a named transaction", answersA(t, g, "foreign."+zone, "10.2.0.1"))

	// A transaction that changes two fields and names one.
	tx := r.cli.TxPipeline()
	tx.HSet(ctx, zone, "a", `{"a":[{"ip":"10.3.0.2"}]}`)
	tx.HSet(ctx, zone, "unnamed", `{"a":[{"ip":"10.3.0.3"}]}`)
	tx.Publish(ctx, AgentChannel, zone+" a")
	if _, err := tx.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "field changed but not named", answersA(t, g, "unnamed."+zone, "10.3.0.3"))

	// Events no message follows at all, and events other than hset/hdel.
	r.hset(zone, "plain", `{"a":[{"ip":"10.4.0.1"}]}`)
	eventually(t, 5*time.Second, "HSET without a message", answersA(t, g, "plain."+zone, "10.4.0.1"))
	// The whole hash replaced by RENAME: a rename_to event, no hset/hdel.
	if err := r.cli.HSet(ctx, "staging", "@", `{"a":[{"ip":"10.0.0.1"}]}`, "renamed", `{"a":[{"ip":"10.5.0.1"}]}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.cli.Rename(ctx, "staging", zone).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "hash replaced by RENAME", answersA(t, g, "renamed."+zone, "10.5.0.1"))
	eventually(t, 5*time.Second, "names of the replaced hash gone", nxdomain(t, g, "plain."+zone))
}
