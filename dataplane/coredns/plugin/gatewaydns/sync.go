package gatewaydns

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
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

// hintedCheck is how long after a writer named the fields it changed in a zone the zone is
// read whole once more, to catch changes by writers that name nothing (keyspace events do
// not say which field changed, and the hinted writer's own events cannot be told apart from
// theirs). hintGrace is how long a keyspace event waits for the hint of the same
// transaction, which redis sends right after it.
const (
	hintedCheck = time.Second
	hintGrace   = 2 * time.Millisecond
)

// zoneMark is what is known about a change to one zone.
type zoneMark struct {
	whole  bool                // changed in unknown fields: read the whole hash
	fields map[string]struct{} // fields named by the writer
	at     time.Time           // when the first unknown change was heard of
}

// syncer keeps a GatewayDNS's zones equal to redis.
type syncer struct {
	cfg     *config
	g       *GatewayDNS
	client  *redis.Client
	serials *serialKeeper

	mu      sync.Mutex
	dirty   map[string]*zoneMark // zones to reload
	full    bool                 // a full resync is wanted
	wake    chan struct{}
	errOnce map[string]bool // log keyspace-config problems once per message

	// Loader goroutine only:
	tooBig map[string]bool      // zone keys refused for max_fields_per_zone
	hinted map[string]time.Time // zones with hinted changes since their last whole read: first hint

	// For tests and benchmarks (the metrics are process-wide): loads done, zones refused.
	zoneLoads, fullLoads, fieldLoads atomic.Int64
	oversized                        atomic.Int64

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
	s := &syncer{
		cfg:        cfg,
		g:          g,
		client:     redis.NewClient(opt),
		dirty:      map[string]*zoneMark{},
		full:       true,
		wake:       make(chan struct{}, 1),
		errOnce:    map[string]bool{},
		tooBig:     map[string]bool{},
		hinted:     map[string]time.Time{},
		loadedOnce: make(chan struct{}),
	}
	s.serials = newSerialKeeper(s.client, s.logOnce)
	return s
}

// checkAuth fails when redis answers but refuses the configured credentials.
func (s *syncer) checkAuth(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.startupWait)
	defer cancel()
	err := s.client.Ping(ctx).Err()
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, refusal := range []string{"WRONGPASS", "NOAUTH", "invalid password", "invalid username-password", "AUTH"} {
		if strings.Contains(msg, refusal) {
			if s.cfg.passwordFrom == "" {
				return fmt.Errorf("redis at %s wants a password and none is configured: %v", s.cfg.addr, err)
			}
			return fmt.Errorf("redis at %s refuses the password of %s: %v", s.cfg.addr, s.cfg.passwordFrom, err)
		}
	}
	return nil
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

// markZone notes a change of zone in unknown fields.
func (s *syncer) markZone(zone string) { s.mark(zone, nil) }

// mark notes a change of zone in fields (none: unknown fields).
func (s *syncer) mark(zone string, fields []string) {
	s.mu.Lock()
	m := s.dirty[zone]
	if m == nil {
		m = &zoneMark{}
		s.dirty[zone] = m
	}
	if len(fields) == 0 {
		if !m.whole {
			m.whole, m.at = true, time.Now()
		}
	} else {
		if m.fields == nil {
			m.fields = map[string]struct{}{}
		}
		for _, f := range fields {
			m.fields[f] = struct{}{}
		}
	}
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
				s.agentMessage(m.Payload)
				continue
			}
			s.markZone(strings.TrimPrefix(m.Channel, prefix))
		}
	}
}

// agentMessage handles a message on AgentChannel: `ZONE [FIELD...]` (the zone's trailing dot
// optional; the fields, if given, are the hash fields the writer changed, so that only they
// are read), or empty or `*` for a full resync.
func (s *syncer) agentMessage(payload string) {
	words := strings.Fields(payload)
	if len(words) == 0 || words[0] == "*" {
		s.markFull()
		return
	}
	zone := strings.TrimSuffix(strings.ToLower(words[0]), ".") + "."
	s.mark(zone, words[1:])
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
// after errors), reads of the fields writers named (at once), and whole-zone reloads, paced
// by a reloadPacer. It is the only writer of the zone set.
func (s *syncer) load(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.resync)
	defer ticker.Stop()
	paced := time.NewTimer(time.Hour)
	paced.Stop()
	defer paced.Stop()
	pacer := newReloadPacer(s.cfg.coalesce)
	pacer.deferUntil = s.deferWholeRead
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
		s.full, s.dirty = false, map[string]*zoneMark{}
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
			var wait time.Duration
			wait, err = s.loadChanges(ctx, pacer, dirty)
			if err != nil {
				pacer.clear() // the retry is a full load
			} else if wait > 0 {
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

// loadChanges reads the named fields of changed zones, then reloads the zones changed in
// unknown fields that the pacer lets through. It returns how long until the next paced
// zone is due.
func (s *syncer) loadChanges(ctx context.Context, pacer *reloadPacer, dirty map[string]*zoneMark) (time.Duration, error) {
	now := time.Now()
	whole, err := s.readFields(ctx, dirty)
	for _, zone := range whole {
		pacer.add(zone, now)
	}
	for zone, m := range dirty {
		if m.whole {
			pacer.add(zone, m.at)
		}
	}
	if err != nil {
		return 0, err
	}
	for {
		// Reloading takes time: after each round, ask the pacer again.
		zones, wait := pacer.due(time.Now())
		if len(zones) == 0 {
			return wait, nil
		}
		for _, zone := range zones {
			start := time.Now()
			delete(s.hinted, zone) // this read covers the hinted writes so far
			err = s.reloadZone(ctx, zone)
			pacer.done(zone, start, time.Now())
			loadsTotal.WithLabelValues("zone", result(err)).Inc()
			s.zoneLoads.Add(1)
			if err != nil {
				return 0, err
			}
		}
	}
}

// deferWholeRead is when a zone changed in unknown fields at `changed` may be read whole:
// a moment after the change, so that the field names of the same transaction arrive first,
// and not before hintedCheck after the first hint that no whole read has covered yet.
func (s *syncer) deferWholeRead(zone string, changed time.Time) time.Time {
	at := changed.Add(hintGrace)
	if h, ok := s.hinted[zone]; ok {
		at = laterOf(at, h.Add(hintedCheck))
	}
	return at
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
	built := make(map[string]*builtZone, len(keys))
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
				if bz := s.refuse(k, rd.fields, old.get(k)); bz != nil {
					built[k] = bz
				}
			case len(rd.hash) > 0: // else replaced by another type or deleted since SCAN
				if bz := s.build(k, rd.hash, old.get(k)); bz != nil {
					built[bz.name] = bz
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
	s.publish(ctx, old, built)
	lastFullSync.SetToCurrentTime()
	if !s.g.loaded.Swap(true) {
		log.Infof("loaded %d zones from redis", len(built))
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

// publish serves the zones of a full load: new versions get their serials, zones that
// stay keep their zoneRef, and the set is replaced.
func (s *syncer) publish(ctx context.Context, old *zoneSet, built map[string]*builtZone) {
	var fresh []*builtZone
	for name, bz := range built {
		if bz != old.get(name) {
			fresh = append(fresh, bz)
		}
	}
	s.serials.assign(ctx, fresh)
	next := &zoneSet{zones: make(map[string]*zoneRef, len(built))}
	for name, bz := range built {
		if r := old.zones[name]; r != nil {
			r.p.Store(bz)
			next.zones[name] = r
		} else {
			next.zones[name] = newZoneRef(bz)
		}
	}
	for name := range old.zones {
		if built[name] == nil {
			s.serials.forget(name)
		}
	}
	s.g.install(next)
}

// swap serves bz (a new version, not yet serial-numbered) as zone key, or stops serving
// the zone when bz is nil. Only adding or removing a zone copies the zone set.
func (s *syncer) swap(ctx context.Context, key string, bz *builtZone) {
	cur := s.g.current()
	r := cur.zones[key]
	if bz != nil {
		s.serials.assign(ctx, []*builtZone{bz})
		if r != nil {
			r.p.Store(bz)
			return
		}
	} else {
		s.serials.forget(key)
		if r == nil {
			return
		}
	}
	next := &zoneSet{zones: make(map[string]*zoneRef, len(cur.zones)+1)}
	maps.Copy(next.zones, cur.zones)
	if bz == nil {
		delete(next.zones, key)
	} else {
		next.zones[key] = newZoneRef(bz)
	}
	s.g.install(next)
}

// reloadZone rereads one zone hash and swaps it in (or out, when it is gone).
func (s *syncer) reloadZone(ctx context.Context, key string) error {
	reads, err := s.readZones(ctx, []string{key})
	if err != nil {
		return err
	}
	rd := reads[0]
	old := s.g.current().get(key)
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
	s.swap(ctx, key, bz)
	return nil
}

// readFields applies the changes whose writers named the fields: one round trip reads those
// fields of every such zone (HMGET), and each zone gets a new version holding just them. It
// returns the zones that must be read whole instead: not served yet, refused for their
// size, no longer a hash, emptied, or changed too much for an incremental update.
func (s *syncer) readFields(ctx context.Context, dirty map[string]*zoneMark) ([]string, error) {
	type read struct {
		zone   string
		fields []string
		cmd    *redis.SliceCmd
	}
	var reads []read
	var whole []string
	pipe := s.client.Pipeline()
	for zone, m := range dirty {
		if len(m.fields) == 0 {
			continue
		}
		if s.tooBig[zone] || s.g.current().get(zone) == nil {
			whole = append(whole, zone)
			continue
		}
		fields := slices.Sorted(maps.Keys(m.fields))
		reads = append(reads, read{zone, fields, pipe.HMGet(ctx, zone, fields...)})
	}
	if len(reads) == 0 {
		return whole, nil
	}
	_, _ = pipe.Exec(ctx) // errors per command, below
	for _, rd := range reads {
		values, err := rd.cmd.Result()
		if err != nil && !isWrongType(err) {
			return whole, fmt.Errorf("read zone %s: %w", rd.zone, err)
		}
		if err != nil || !s.applyFields(ctx, rd.zone, rd.fields, values) {
			whole = append(whole, rd.zone)
		}
		if _, ok := s.hinted[rd.zone]; !ok {
			s.hinted[rd.zone] = time.Now()
		}
	}
	return whole, nil
}

// applyFields serves the version of zone with fields set to values (nil: the field is
// gone). It reports false when the zone must be read whole instead.
func (s *syncer) applyFields(ctx context.Context, zone string, fields []string, values []any) bool {
	s.fieldLoads.Add(1)
	old := s.g.current().get(zone)
	changes := map[string]*string{}
	for i, f := range fields {
		v, _ := values[i].(string)
		cur := old.owner(f)
		switch {
		case values[i] == nil && cur != nil:
			changes[f] = nil
		case values[i] != nil && (cur == nil || cur.value != v):
			changes[f] = &v
		}
	}
	if len(changes) == 0 {
		return true
	}
	added := 0
	for f, v := range changes {
		if v != nil && old.owner(f) == nil {
			added++
		} else if v == nil {
			added--
		}
	}
	if n := len(old.owners) + added; n == 0 || n > s.cfg.maxFields {
		return false
	}
	bz := applyChanges(old, changes, s.cfg.zoneDefaults(), s.cfg.limits(), s.logData)
	if bz == nil {
		return false
	}
	s.swap(ctx, zone, bz)
	return true
}

// logData reports malformed or oversized data that is skipped.
func (s *syncer) logData(format string, args ...any) {
	skippedTotal.Inc()
	log.Warningf(format, args...)
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
	if bz := updateFrom(name, fields, old, s.cfg.zoneDefaults(), s.cfg.limits(), s.logData); bz != nil {
		return bz
	}
	return buildZone(name, fields, old, s.cfg.zoneDefaults(), s.cfg.limits(), s.logData)
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
