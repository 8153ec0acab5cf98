// Package redisfeed keeps the route table equal to redis's /tcprouter/service/* keys by
// push: keyspace notifications and the agent's tfgateway:proxy channel trigger a GET of one
// key; a full SCAN resync runs after every (re)subscription and periodically. Connections
// never wait for redis.
package redisfeed

import (
	"context"
	"errors"
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
	msgs := make(chan any, 256)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := ps.Receive(ctx)
			if err != nil {
				errc <- err
				return
			}
			msgs <- m
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
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Count == 2 { // both subscriptions confirmed: nothing can be missed now
					f.ensureNotifications(ctx)
					f.resync(ctx)
				}
			case *redis.Message:
				host, ok := f.hostOf(m, pattern)
				if ok {
					f.refresh(ctx, host)
				}
			}
		}
	}
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

// refresh rereads one key and applies it.
func (f *Feed) refresh(ctx context.Context, host string) {
	key := routes.KeyPrefix + host
	raw, err := f.Client.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		f.Table.Delete(host)
		f.updated(host, false)
	case err != nil:
		f.Log.Warn("redis GET failed; keeping the old route until the next resync", "key", key, "err", err)
	default:
		svc, derr := f.decode(key, raw)
		if derr != nil {
			f.Log.Warn("ignoring redis route", "err", derr)
			f.Table.Delete(host)
			f.updated(host, false)
			return
		}
		f.Table.Set(host, svc)
		f.updated(host, true)
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

func (f *Feed) updated(host string, ok bool) {
	if f.OnUpdate != nil {
		f.OnUpdate(host, ok)
	}
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
