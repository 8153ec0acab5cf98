package gatewaydns

import (
	"strings"
	"time"
)

// Telling a writer that names its fields from one that names nothing.
//
// A keyspace event says which zone hash changed, not which field: alone, it costs a read of
// the whole hash. A writer that names its fields sends, in the same MULTI/EXEC, one HSET or
// HDEL per field it changes and then `PUBLISH tfgateway:dns "ZONE FIELD..."`. Redis runs a
// transaction at once and delivers what it publishes in order, so on the plugin's
// subscription the transaction's keyspace events come together, immediately followed by its
// message. The `hset`/`hdel` events of that zone received right before the message, at most
// one per named field, are therefore the transaction's own: they need no whole read. Any
// other event is another writer's change in unknown fields: an event that no message follows
// within nameGrace, events beyond the number of fields named, and every event other than
// hset/hdel (del, rename, expired, ...), which no message accounts for.
//
// A writer that names a field whose HDEL removes nothing (so sends no event) could let
// another writer's event just before its transaction pass for its own; that change is then
// picked up by the next full resync. The agent names only fields it changes.

// nameGrace is how long keyspace events wait for the message that names their fields. They
// arrive in the same read from redis as a rule; the grace covers a subscriber descheduled
// between the two on a loaded machine. It delays only changes by writers that name nothing.
const nameGrace = 10 * time.Millisecond

// eventRun is the keyspace events of one zone received last, one after the other, that the
// agent message following them may name.
type eventRun struct {
	zone string
	n    int       // hset and hdel events
	at   time.Time // when the first arrived
}

// keyspaceEvent handles a keyspace event (op is the command's event name) of zone key.
func (s *syncer) keyspaceEvent(zone, op string) {
	now := time.Now()
	s.mu.Lock()
	if op == "hset" || op == "hdel" {
		if s.unnamed != nil && s.unnamed.zone == zone {
			s.unnamed.n++
			s.mu.Unlock()
			return
		}
		s.flushRunLocked()
		s.unnamed = &eventRun{zone: zone, n: 1, at: now}
	} else {
		s.flushRunLocked()
		s.markLocked(zone, nil, now)
	}
	s.mu.Unlock()
	s.poke() // the loader takes the run if no message names it within nameGrace
}

// agentMessage handles a message on AgentChannel: `ZONE [FIELD...]` (the zone's trailing dot
// optional; the fields, if given, are the hash fields the writer changed, one HSET or HDEL
// each, so that only they are read), or empty or `*` for a full resync.
func (s *syncer) agentMessage(payload string) {
	words := strings.Fields(payload)
	s.mu.Lock()
	if len(words) == 0 || words[0] == "*" {
		s.flushRunLocked()
		s.full = true
	} else {
		zone := strings.TrimSuffix(strings.ToLower(words[0]), ".") + "."
		fields := words[1:]
		if r := s.unnamed; r != nil && r.zone == zone {
			r.n -= min(r.n, len(fields)) // the transaction's own events
		}
		s.flushRunLocked() // events it does not account for are another writer's
		s.markLocked(zone, fields, time.Now())
	}
	s.mu.Unlock()
	s.poke()
}

// flushRunLocked turns the events of the run no message named into a change in unknown
// fields.
func (s *syncer) flushRunLocked() {
	if r := s.unnamed; r != nil {
		s.unnamed = nil
		if r.n > 0 {
			s.markLocked(r.zone, nil, r.at)
		}
	}
}

// takeOldRun (loader) flushes the run once nameGrace has passed without a message naming
// it, and returns how long until the run there is now is due (0: none).
func (s *syncer) takeOldRun(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.unnamed
	if r == nil {
		return 0
	}
	if due := r.at.Add(nameGrace); now.Before(due) {
		return due.Sub(now)
	}
	s.flushRunLocked()
	return 0
}
