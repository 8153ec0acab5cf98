package gatewaydns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// AgentChannel is the pub/sub channel on which the agent names a zone it changed. The
// payload is the zone name (trailing dot optional); an empty payload or "*" asks for a full
// resync.
const AgentChannel = "tfgateway:dns"

// keyspaceFlags are the notify-keyspace-events classes the plugin needs: keyspace events
// (K) for hash commands (h), generic commands such as DEL and RENAME (g), string writes
// that replace a zone key ($), expiry (x) and eviction (e).
const keyspaceFlags = "Kgh$xe"

// syncer keeps a GatewayDNS's zones equal to redis.
type syncer struct {
	cfg    *config
	g      *GatewayDNS
	client *redis.Client

	mu      sync.Mutex
	dirty   map[string]struct{} // zones to reload
	full    bool                // a full resync is wanted
	wake    chan struct{}
	errOnce map[string]bool // log keyspace-config problems once per message

	tooBig map[string]bool // zone keys refused for max_fields_per_zone (loader goroutine only)

	// For tests and benchmarks (the metrics are process-wide): loads done, zones refused.
	zoneLoads, fullLoads atomic.Int64
	oversized            atomic.Int64

	loadedOnce chan struct{} // closed after the first successful full load
	closeOnce  sync.Once
}

func newSyncer(cfg *config, g *GatewayDNS) *syncer {
	opt := &redis.Options{
		Network:         cfg.network,
		Addr:            cfg.addr,
		Password:        cfg.password,
		DB:              cfg.db,
		PoolSize:        4,
		MinIdleConns:    1,
		MaxRetries:      1,
		DialTimeout:     2 * time.Second,
		ReadTimeout:     5 * time.Second,
		WriteTimeout:    5 * time.Second,
		Protocol:        2,
		DisableIdentity: true,
	}
	return &syncer{
		cfg:        cfg,
		g:          g,
		client:     redis.NewClient(opt),
		dirty:      map[string]struct{}{},
		full:       true,
		wake:       make(chan struct{}, 1),
		errOnce:    map[string]bool{},
		tooBig:     map[string]bool{},
		loadedOnce: make(chan struct{}),
	}
}

// run starts the subscriber and the loader; both stop when ctx ends.
func (s *syncer) run(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.subscribe(ctx) }()
	go func() { defer wg.Done(); s.load(ctx) }()
	s.poke() // the initial full load, even if the subscription cannot be made yet
	return &wg
}

func (s *syncer) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *syncer) markZone(zone string) {
	s.mu.Lock()
	s.dirty[zone] = struct{}{}
	s.mu.Unlock()
	s.poke()
}

func (s *syncer) markFull() {
	s.mu.Lock()
	s.full = true
	s.mu.Unlock()
	s.poke()
}

// subscribe listens for keyspace events on zone keys and for the agent's channel. Each
// (re)subscription, which go-redis performs on every reconnect, triggers a full resync: any
// change made while the connection was down is picked up.
func (s *syncer) subscribe(ctx context.Context) {
	prefix := fmt.Sprintf("__keyspace@%d__:", s.cfg.db)
	ps := s.client.Subscribe(ctx, AgentChannel)
	// A blocked read does not watch ctx; closing the subscription ends it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	defer ps.Close()
	if err := ps.PSubscribe(ctx, prefix+"*."); err != nil && ctx.Err() == nil {
		log.Warningf("subscribe: %v", err)
	}
	backoff := newBackoff()
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, 15*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() {
				// Quiet connection: a ping proves it is alive, or breaks it and reconnects.
				_ = ps.Ping(ctx)
				continue
			}
			log.Warningf("redis subscription: %v (reconnecting)", err)
			if !backoff.wait(ctx) {
				return
			}
			continue
		}
		backoff.reset()
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "psubscribe" {
				s.ensureKeyspaceEvents(ctx)
			}
			s.markFull()
		case *redis.Message:
			if m.Channel == AgentChannel {
				zone := strings.ToLower(strings.TrimSpace(m.Payload))
				if zone == "" || zone == "*" {
					s.markFull()
				} else {
					s.markZone(strings.TrimSuffix(zone, ".") + ".")
				}
				continue
			}
			s.markZone(strings.TrimPrefix(m.Channel, prefix))
		}
	}
}

// ensureKeyspaceEvents adds the flags the plugin needs to notify-keyspace-events, keeping
// whatever other flags are set. A redis that forbids CONFIG is logged: the agent's channel
// and the periodic resync still keep the zones current.
func (s *syncer) ensureKeyspaceEvents(ctx context.Context) {
	cur, err := s.client.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		s.logOnce("get", "cannot read notify-keyspace-events (%v): relying on the %s channel and resync every %s",
			err, AgentChannel, s.cfg.resync)
		return
	}
	have := cur["notify-keyspace-events"]
	want := unionFlags(have, keyspaceFlags)
	if want == have {
		return
	}
	if err := s.client.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		s.logOnce("set", "cannot set notify-keyspace-events to %q (%v): relying on the %s channel and resync every %s",
			want, err, AgentChannel, s.cfg.resync)
		return
	}
	log.Infof("notify-keyspace-events set to %q (was %q)", want, have)
}

// logOnce logs a problem the first time it is seen; it reports whether it did.
func (s *syncer) logOnce(key, format string, args ...any) bool {
	s.mu.Lock()
	seen := s.errOnce[key]
	s.errOnce[key] = true
	s.mu.Unlock()
	if !seen {
		log.Warningf(format, args...)
	}
	return !seen
}

// unionFlags returns have plus every flag of need that have does not already imply. "A" is
// redis's alias for "g$lshzxetd".
func unionFlags(have, need string) string {
	implied := have
	if strings.Contains(have, "A") {
		implied += "g$lshzxetd"
	}
	out := have
	for _, c := range need {
		if !strings.ContainsRune(implied, c) {
			out += string(c)
			implied += string(c)
		}
	}
	return out
}

// load applies pending work: full resyncs (at start, on reconnect, every resync period, and
// after errors) and single-zone reloads, paced by a reloadPacer. It is the only writer of
// the zone set.
func (s *syncer) load(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.resync)
	defer ticker.Stop()
	paced := time.NewTimer(time.Hour)
	paced.Stop()
	defer paced.Stop()
	pacer := newReloadPacer(s.cfg.coalesce)
	backoff := newBackoff()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-paced.C: // a zone's pause is over
		case <-ticker.C:
			s.markFull()
			continue
		case <-retry:
			retry = nil
			s.markFull()
			continue
		}
		s.mu.Lock()
		full, dirty := s.full, s.dirty
		s.full, s.dirty = false, map[string]struct{}{}
		s.mu.Unlock()

		var err error
		if full {
			// The full load reads redis after these zones were marked, so it covers them; if
			// it fails, the retry is a full load again.
			pacer.clear()
			err = s.fullSync(ctx)
			loadsTotal.WithLabelValues("full", result(err)).Inc()
			s.fullLoads.Add(1)
		} else {
			pacer.add(dirty)
			zones, wait := pacer.due(time.Now())
			for _, zone := range zones {
				start := time.Now()
				err = s.reloadZone(ctx, zone)
				pacer.done(zone, start, time.Now())
				loadsTotal.WithLabelValues("zone", result(err)).Inc()
				s.zoneLoads.Add(1)
				if err != nil {
					pacer.clear() // the retry is a full load
					break
				}
			}
			if err == nil && wait > 0 {
				paced.Reset(wait)
			}
		}
		zonesServed.Set(float64(len(s.g.current().zones)))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warningf("redis load: %v (full resync in %s)", err, backoff.next)
			retry = time.After(backoff.step())
			continue
		}
		backoff.reset()
	}
}

// fullSync reads every zone hash and replaces the zone set. Zones whose content did not
// change keep their built zone.
func (s *syncer) fullSync(ctx context.Context) error {
	var keys []string
	seen := map[string]bool{}
	var cursor uint64
	for {
		batch, next, err := s.client.ScanType(ctx, cursor, "*.", 1000, "hash").Result()
		if err != nil {
			return fmt.Errorf("scan zones: %w", err)
		}
		for _, k := range batch {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	old := s.g.current()
	next := &zoneSet{zones: make(map[string]*builtZone, len(keys))}
	tooBig := map[string]bool{}
	const perPipeline = 100
	for start := 0; start < len(keys); start += perPipeline {
		chunk := keys[start:min(start+perPipeline, len(keys))]
		reads, err := s.readZones(ctx, chunk)
		if err != nil {
			return err
		}
		for i, k := range chunk {
			switch rd := reads[i]; {
			case rd.fields > 0:
				tooBig[k] = true
				if bz := s.refuse(k, rd.fields, old.zones[k]); bz != nil {
					next.zones[k] = bz
				}
			case len(rd.hash) > 0: // else replaced by another type or deleted since SCAN
				if bz := s.build(k, rd.hash, old.zones[k]); bz != nil {
					next.zones[bz.name] = bz
				}
			}
		}
	}
	for k := range s.tooBig {
		if !tooBig[k] {
			s.fits(k)
		}
	}
	s.tooBig = tooBig
	s.countOversized()
	s.g.install(next)
	lastFullSync.SetToCurrentTime()
	if !s.g.loaded.Swap(true) {
		log.Infof("loaded %d zones from redis", len(next.zones))
	}
	s.closeOnce.Do(func() { close(s.loadedOnce) })
	return nil
}

// zoneRead is what reading one zone key found.
type zoneRead struct {
	hash   map[string]string // the hash; empty when the key is gone or not a hash
	fields int64             // > 0: the hash has this many fields, more than max_fields_per_zone, and was not read
}

// readZones reads zone hashes: one round trip asks their sizes (HLEN), a second reads those
// within max_fields_per_zone (HGETALL), so an oversized hash is never transferred. A hash
// that grew past the limit between the two is refused as well.
func (s *syncer) readZones(ctx context.Context, keys []string) ([]zoneRead, error) {
	out := make([]zoneRead, len(keys))
	lens := make([]*redis.IntCmd, len(keys))
	pipe := s.client.Pipeline()
	for i, k := range keys {
		lens[i] = pipe.HLen(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // errors are per command, below
	gets := make([]*redis.MapStringStringCmd, len(keys))
	pipe = s.client.Pipeline()
	for i, k := range keys {
		n, err := lens[i].Result()
		if err != nil && !isWrongType(err) {
			return nil, fmt.Errorf("read zone %s: %w", k, err)
		}
		switch {
		case err != nil || n == 0:
		case n > int64(s.cfg.maxFields):
			out[i].fields = n
		default:
			gets[i] = pipe.HGetAll(ctx, k)
		}
	}
	if pipe.Len() == 0 {
		return out, nil
	}
	_, _ = pipe.Exec(ctx)
	for i, k := range keys {
		if gets[i] == nil {
			continue
		}
		hash, err := gets[i].Result()
		if err != nil && !isWrongType(err) {
			return nil, fmt.Errorf("read zone %s: %w", k, err)
		}
		if len(hash) > s.cfg.maxFields {
			out[i].fields = int64(len(hash))
			continue
		}
		out[i].hash = hash
	}
	return out, nil
}

// refuse handles a zone hash with more fields than max_fields_per_zone: it is not loaded;
// the version served before, if any, stays in service. It returns that version.
func (s *syncer) refuse(key string, fields int64, old *builtZone) *builtZone {
	if !s.tooBig[key] {
		kept := "it is not served"
		if old != nil {
			kept = "the version loaded before keeps being served"
		}
		log.Warningf("zone %s: hash has %d fields, more than max_fields_per_zone %d: not loaded; %s",
			key, fields, s.cfg.maxFields, kept)
	}
	return old
}

func (s *syncer) countOversized() {
	oversizedZones.Set(float64(len(s.tooBig)))
	s.oversized.Store(int64(len(s.tooBig)))
}

// fits notes that a zone refused before is no longer over max_fields_per_zone (it shrank or
// is gone).
func (s *syncer) fits(key string) {
	log.Infof("zone %s: no longer over max_fields_per_zone %d", key, s.cfg.maxFields)
}

// reloadZone rereads one zone hash and swaps it in (or out, when it is gone).
func (s *syncer) reloadZone(ctx context.Context, key string) error {
	reads, err := s.readZones(ctx, []string{key})
	if err != nil {
		return err
	}
	rd := reads[0]
	cur := s.g.current()
	old := cur.zones[key]
	if rd.fields > 0 {
		s.refuse(key, rd.fields, old)
		s.tooBig[key] = true
		s.countOversized()
		return nil
	}
	if s.tooBig[key] {
		s.fits(key)
		delete(s.tooBig, key)
		s.countOversized()
	}
	var bz *builtZone
	if len(rd.hash) > 0 {
		bz = s.build(key, rd.hash, old)
		if bz == old && bz != nil {
			return nil
		}
	}
	if bz == nil && old == nil {
		return nil
	}
	next := &zoneSet{zones: make(map[string]*builtZone, len(cur.zones)+1)}
	for n, z := range cur.zones {
		next.zones[n] = z
	}
	if bz == nil {
		delete(next.zones, key)
	} else {
		next.zones[key] = bz
	}
	s.g.install(next)
	return nil
}

// build validates the key and builds its zone, reusing old when the content is unchanged.
func (s *syncer) build(key string, fields map[string]string, old *builtZone) *builtZone {
	name, err := zoneName(key)
	if err != nil {
		if s.logOnce("zone:"+key, "redis key %q not served: %v", key, err) {
			skippedTotal.Inc()
		}
		return nil
	}
	logf := func(format string, args ...any) {
		skippedTotal.Inc()
		log.Warningf(format, args...)
	}
	if bz := updateFrom(name, fields, old, s.cfg.zoneDefaults(), s.cfg.limits(), logf); bz != nil {
		return bz
	}
	return buildZone(name, fields, old, s.cfg.zoneDefaults(), s.cfg.limits(), logf)
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func isWrongType(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

// backoff spaces out retries against an unavailable redis: 100 ms doubling to 5 s.
type backoff struct{ next time.Duration }

func newBackoff() *backoff { return &backoff{next: 100 * time.Millisecond} }

func (b *backoff) reset() { b.next = 100 * time.Millisecond }

func (b *backoff) step() time.Duration {
	d := b.next
	b.next = min(2*b.next, 5*time.Second)
	return d
}

func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.step())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
