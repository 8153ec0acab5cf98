// Package redisfeed keeps the route table equal to redis's /tcprouter/service/* keys by
// push: keyspace notifications and the agent's tfgateway:proxy channel name hosts to reread;
// a full SCAN resync runs after every (re)subscription and periodically. Connections never
// wait for redis.
//
// Every change arrives twice (the keyspace event and the agent's PUBLISH) and the agent
// writes in bursts, so the feed does not answer each event with its own GET: it takes the
// event that woke it plus every event already queued behind it, reads the distinct hosts
// with one MGET and applies them to the table in one update. An isolated change is read at
// once (nothing waits for more events), and since the read happens after the events were
// received it returns redis's current value: a host deleted and set again within a burst
// ends as redis holds it.
package redisfeed

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"tfgateway.dev/dataplane/router/internal/routes"
)

// ProxyChannel is where the agent PUBLISHes a domain whose proxy entry changed.
const ProxyChannel = "tfgateway:proxy"

// requiredEvents are the notify-keyspace-events flags the feed needs: keyspace events (K)
// for string commands ($), generic commands like DEL/RENAME/EXPIRE (g), expiry (x) and
// eviction (e).
const requiredEvents = "K$gxe"

// maxBatch bounds the hosts read in one MGET and applied in one table copy.
const maxBatch = 512

// Feed syncs a routes.Table from redis.
type Feed struct {
	Client *redis.Client
	Table  *routes.Table
	Resync time.Duration
	Log    *slog.Logger
	// Check refuses direct targets from redis (routes.CheckTarget when nil).
	Check routes.TargetPolicy
	// Observers for metrics and tests (optional).
	OnResync func(n int, err error)
	OnUpdate func(host string, ok bool)
	// OnFetch is called after each read of changed hosts (one redis round trip) with the
	// number of hosts it read.
	OnFetch func(hosts int, err error)
}

// Run blocks until ctx ends, reconnecting with backoff.
func (f *Feed) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := f.session(ctx)
		if ctx.Err() != nil {
			return
		}
		f.Log.Warn("redis feed interrupted; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		if err == nil {
			backoff = 100 * time.Millisecond
		}
	}
}

// session subscribes, resyncs, then applies events until an error.
func (f *Feed) session(ctx context.Context) error {
	if err := f.Client.Ping(ctx).Err(); err != nil {
		return err
	}
	db := f.Client.Options().DB
	f.ensureNotifications(ctx)
	pattern := "__keyspace@" + itoa(db) + "__:" + routes.KeyPrefix + "*"
	ps := f.Client.PSubscribe(ctx, pattern)
	defer ps.Close()
	if err := ps.Subscribe(ctx, ProxyChannel); err != nil {
		return err
	}
	ticker := time.NewTicker(f.Resync)
	defer ticker.Stop()
	msgs := make(chan any, 2*maxBatch)
	errc := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop) // the receiver must not stay blocked on a full msgs after we return
	go func() {
		for {
			m, err := ps.Receive(ctx)
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-stop:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-ticker.C:
			f.resync(ctx)
		case m := <-msgs:
			f.handle(ctx, m, msgs, pattern)
		}
	}
}

// handle processes m and the messages queued behind it, up to maxBatch distinct hosts: the
// hosts are collected and read in one round trip. A subscription confirmation first applies
// the hosts collected so far, then resyncs.
func (f *Feed) handle(ctx context.Context, m any, msgs <-chan any, pattern string) {
	b := batch{seen: map[string]struct{}{}}
	for {
		switch m := m.(type) {
		case *redis.Subscription:
			f.refresh(ctx, b.hosts)
			b.reset()
			if m.Count == 2 { // both subscriptions confirmed: nothing can be missed now
				f.ensureNotifications(ctx)
				f.resync(ctx)
			}
		case *redis.Message:
			if host, ok := f.hostOf(m, pattern); ok {
				b.add(host)
			}
		}
		if len(b.hosts) >= maxBatch || !next(msgs, &m) {
			break
		}
	}
	f.refresh(ctx, b.hosts)
}

// next takes a message that is already queued, without waiting.
func next(msgs <-chan any, m *any) bool {
	select {
	case *m = <-msgs:
		return true
	default:
		return false
	}
}

// batch is a set of hosts in arrival order.
type batch struct {
	hosts []string
	seen  map[string]struct{}
}

func (b *batch) add(host string) {
	if _, dup := b.seen[host]; !dup {
		b.seen[host] = struct{}{}
		b.hosts = append(b.hosts, host)
	}
}

func (b *batch) reset() {
	b.hosts = b.hosts[:0]
	clear(b.seen)
}

func (f *Feed) hostOf(m *redis.Message, pattern string) (string, bool) {
	if m.Channel == ProxyChannel {
		h := strings.ToLower(strings.TrimSpace(m.Payload))
		return h, h != "" && !strings.Contains(h, "/")
	}
	if m.Pattern != pattern {
		return "", false
	}
	key := m.Channel[strings.IndexByte(m.Channel, ':')+1:]
	return routes.HostFromKey(key)
}

// refresh rereads the keys of hosts in one MGET (a consistent snapshot) and applies them to
// the table in one update. On a redis error the old routes stay until the next resync (a
// broken connection also ends the session, which resyncs).
func (f *Feed) refresh(ctx context.Context, hosts []string) {
	if len(hosts) == 0 {
		return
	}
	keys := make([]string, len(hosts))
	for i, h := range hosts {
		keys[i] = routes.KeyPrefix + h
	}
	vals, err := f.Client.MGet(ctx, keys...).Result()
	if f.OnFetch != nil {
		f.OnFetch(len(hosts), err)
	}
	if err == nil && len(vals) != len(keys) {
		err = fmt.Errorf("MGET of %d keys returned %d values", len(keys), len(vals))
	}
	if err != nil {
		f.Log.Warn("redis MGET failed; keeping the old routes until the next resync", "keys", len(keys), "err", err)
		return
	}
	set := make(map[string]routes.Service, len(hosts))
	var del []string
	for i, host := range hosts {
		raw, ok := vals[i].(string)
		if !ok { // missing (or not a string, which a resync would not load either)
			del = append(del, host)
			continue
		}
		svc, derr := f.decode(keys[i], []byte(raw))
		if derr != nil {
			f.Log.Warn("ignoring redis route", "err", derr)
			del = append(del, host)
			continue
		}
		set[host] = svc
	}
	f.Table.Apply(set, del)
	if f.OnUpdate != nil {
		for _, host := range hosts {
			_, ok := set[host]
			f.OnUpdate(host, ok)
		}
	}
}

func (f *Feed) decode(key string, raw []byte) (routes.Service, error) {
	svc, err := routes.Decode(key, raw)
	if err != nil {
		return svc, err
	}
	check := f.Check
	if check == nil {
		check = routes.CheckTarget
	}
	if !svc.IsTunnel() {
		if err := check(svc.Addr); err != nil {
			return routes.Service{}, &routes.DecodeError{Key: key, Err: err}
		}
	}
	return svc, nil
}

// resync rebuilds the whole table with SCAN + MGET.
func (f *Feed) resync(ctx context.Context) {
	all := map[string]routes.Service{}
	var cursor uint64
	var err error
	for {
		var keys []string
		keys, cursor, err = f.Client.Scan(ctx, cursor, routes.KeyPrefix+"*", 1000).Result()
		if err != nil {
			break
		}
		if len(keys) > 0 {
			var vals []any
			vals, err = f.Client.MGet(ctx, keys...).Result()
			if err != nil {
				break
			}
			for i, v := range vals {
				s, ok := v.(string)
				if !ok {
					continue // deleted between SCAN and MGET
				}
				host, ok := routes.HostFromKey(keys[i])
				if !ok {
					continue
				}
				svc, derr := f.decode(keys[i], []byte(s))
				if derr != nil {
					f.Log.Warn("ignoring redis route", "err", derr)
					continue
				}
				all[host] = svc
			}
		}
		if cursor == 0 {
			break
		}
	}
	if err != nil {
		f.Log.Warn("resync failed; keeping the current table", "err", err)
	} else {
		f.Table.Replace(all)
		f.Log.Debug("resync done", "routes", len(all))
	}
	if f.OnResync != nil {
		f.OnResync(len(all), err)
	}
}

// ensureNotifications adds the flags the feed needs to notify-keyspace-events, keeping
// whatever other users of this redis configured (a union, never a replacement).
func (f *Feed) ensureNotifications(ctx context.Context) {
	cur, err := f.Client.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		f.Log.Warn("cannot read notify-keyspace-events; relying on the proxy channel and resync", "err", err)
		return
	}
	have := cur["notify-keyspace-events"]
	want := UnionFlags(have, requiredEvents)
	if want == have {
		return
	}
	if err := f.Client.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		f.Log.Warn("cannot set notify-keyspace-events; relying on the proxy channel and resync", "err", err)
	}
}

// UnionFlags merges redis notify-keyspace-events flag strings. "A" already covers
// "$glshzxetd" (redis expands it), so a string with A keeps it.
func UnionFlags(have, add string) string {
	out := have
	for _, c := range add {
		if strings.ContainsRune(out, c) {
			continue
		}
		if strings.ContainsRune(out, 'A') && strings.ContainsRune("$lshzxegt", c) {
			continue
		}
		out += string(c)
	}
	return out
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
