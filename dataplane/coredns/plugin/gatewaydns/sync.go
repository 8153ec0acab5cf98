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

// AgentChannel is the pub/sub channel on which writers name what they changed: `ZONE
// [FIELD...]` (see agentMessage); an empty payload or "*" asks for a full resync.
const AgentChannel = "tfgateway:dns"

// keyspaceFlags are the notify-keyspace-events classes the plugin needs: keyspace events
// (K) for hash commands (h), generic commands such as DEL and RENAME (g), string writes
// that replace a zone key ($), expiry (x) and eviction (e).
const keyspaceFlags = "Kgh$xe"

// zoneMark is what is known about a change to one zone.
type zoneMark struct {
	whole  bool      // changed in unknown fields: read the whole hash
	fields fieldSet  // fields named by the writer
	at     time.Time // when the first unknown change was heard of
	named  time.Time // when the first change in named fields was heard of
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

	unnamed *eventRun // subscriber goroutine only: keyspace events the next message may name

	// Loader goroutine only:
	tooBig  map[string]bool     // zone keys refused for max_fields_per_zone
	job     *wholeJob           // the whole read in flight; nil when none
	touched map[string]fieldSet // while a job runs: fields read by name since it began, per zone

	// For tests and benchmarks (the metrics are process-wide): loads done, zones refused.
	zoneLoads, fullLoads, fieldLoads atomic.Int64
	oversized                        atomic.Int64
	readHook                         func(*wholeResult) // tests: called by a whole read before it reports

	loadedOnce chan struct{} // closed after the first successful full load
	closeOnce  sync.Once
}

// fieldSet is a set of hash fields.
type fieldSet map[string]struct{}

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
func (s *syncer) mark(zone string, fields []string) { s.markAt(zone, fields, time.Now()) }

// markAt notes a change of zone in fields (none: unknown fields) heard of at `at`.
func (s *syncer) markAt(zone string, fields []string, at time.Time) {
	s.mu.Lock()
	defer s.poke()
	defer s.mu.Unlock()
	m := s.dirty[zone]
	if m == nil {
		m = &zoneMark{}
		s.dirty[zone] = m
	}
	if len(fields) == 0 {
		if !m.whole {
			m.whole, m.at = true, at
		}
		return
	}
	if m.fields == nil {
		m.fields, m.named = fieldSet{}, at
	}
	for _, f := range fields {
		m.fields[f] = struct{}{}
	}
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
		wait := 15 * time.Second
		if s.unnamed != nil {
			wait = nameGrace // the message naming these events, if any, is there at once
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() {
				if s.unnamed != nil {
					s.flushRun() // no message named them
					continue
				}
				// Quiet connection: a ping proves it is alive, or breaks it and reconnects.
				_ = ps.Ping(ctx)
				continue
			}
			s.flushRun()
			log.Warningf("redis subscription: %v (reconnecting)", err)
			if !backoff.wait(ctx) {
				return
			}
			continue
		}
		backoff.reset()
		switch m := msg.(type) {
		case *redis.Subscription:
			s.flushRun()
			if m.Kind == "psubscribe" {
				s.ensureKeyspaceEvents(ctx)
			}
			s.markFull()
		case *redis.Message:
			if m.Channel == AgentChannel {
				s.agentMessage(m.Payload)
				continue
			}
			s.keyspaceEvent(strings.TrimPrefix(m.Channel, prefix), m.Payload)
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
