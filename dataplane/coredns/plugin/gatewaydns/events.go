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

// nameGrace is how long the subscriber waits, with nothing to read, for the message that
// names the fields of the keyspace events before it. Redis writes a transaction's
// notifications in one go, so the message is there at once; the grace only delays the
// changes of writers that name nothing. Time the subscriber spends descheduled does not
// count: it is a read timeout.
const nameGrace = 5 * time.Millisecond

// eventRun is the keyspace events of one zone received last, one after the other, that the
// agent message following them may name.
type eventRun struct {
	zone string
	n    int       // hset and hdel events
	at   time.Time // when the first arrived
}

// keyspaceEvent handles a keyspace event (op is the command's event name) of zone key.
// Subscriber goroutine only, as are agentMessage and flushRun.
func (s *syncer) keyspaceEvent(zone, op string) {
	if op == "hset" || op == "hdel" {
		if r := s.unnamed; r != nil && r.zone == zone {
			r.n++
			return
		}
		s.flushRun()
		s.unnamed = &eventRun{zone: zone, n: 1, at: time.Now()}
		return
	}
	s.flushRun()
	s.markZone(zone)
}

// agentMessage handles a message on AgentChannel: `ZONE [FIELD...]` (the zone's trailing dot
// optional; the fields, if given, are the hash fields the writer changed, one HSET or HDEL
// each, so that only they are read), or empty or `*` for a full resync.
func (s *syncer) agentMessage(payload string) {
	words := strings.Fields(payload)
	if len(words) == 0 || words[0] == "*" {
		s.flushRun()
		s.markFull()
		return
	}
	zone := strings.TrimSuffix(strings.ToLower(words[0]), ".") + "."
	fields := words[1:]
	if r := s.unnamed; r != nil && r.zone == zone {
		r.n -= min(r.n, len(fields)) // the transaction's own events
	}
	s.flushRun() // events it does not account for are another writer's
	s.mark(zone, fields)
}

// flushRun turns the events of the run that no message named into a change in unknown
// fields: when something else comes next, when nothing comes within nameGrace, or when the
// subscription breaks.
func (s *syncer) flushRun() {
	if r := s.unnamed; r != nil {
		s.unnamed = nil
		if r.n > 0 {
			s.markAt(r.zone, nil, r.at)
		}
	}
}
