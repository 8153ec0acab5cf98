package routes

import (
	"strings"
	"sync"
	"sync/atomic"
)

// Table answers lookups from an immutable snapshot (one atomic load per connection) and
// takes updates under a mutex that copies the dynamic map (updates are rare, lookups hot).
type Table struct {
	static   map[string]Service
	catchAll *Service

	mu      sync.Mutex // serialises writers
	dynamic atomic.Pointer[map[string]Service]
}

// NewTable builds a table from the static services of router.toml.
func NewTable(static map[string]Service, catchAllName string) *Table {
	t := &Table{static: map[string]Service{}}
	for k, v := range static {
		v.Static = true
		if k == catchAllName {
			c := v
			t.catchAll = &c
			continue
		}
		t.static[strings.ToLower(k)] = v
	}
	empty := map[string]Service{}
	t.dynamic.Store(&empty)
	return t
}

// CatchAllRoute names the route of connections served by the static CATCH_ALL entry.
const CatchAllRoute = "CATCH_ALL"

// Lookup finds the service for host in trs's order: static map, redis, static CATCH_ALL.
// It also returns the name of the matched route (the host, or CatchAllRoute).
func (t *Table) Lookup(host string) (Service, string, bool) {
	host = strings.ToLower(host)
	if s, ok := t.static[host]; ok {
		return s, host, true
	}
	if s, ok := (*t.dynamic.Load())[host]; ok {
		return s, host, true
	}
	if t.catchAll != nil {
		return *t.catchAll, CatchAllRoute, true
	}
	return Service{}, "", false
}

// Set adds or replaces the dynamic route for host.
func (t *Table) Set(host string, s Service) {
	t.update(1, func(m map[string]Service) { m[strings.ToLower(host)] = s })
}

// Delete removes the dynamic route for host.
func (t *Table) Delete(host string) {
	t.update(0, func(m map[string]Service) { delete(m, strings.ToLower(host)) })
}

// Apply sets the routes in set and removes the hosts in del with a single copy of the
// dynamic map, so a burst of changes costs one copy instead of one per host. A host in both
// is removed.
func (t *Table) Apply(set map[string]Service, del []string) {
	if len(set) == 0 && len(del) == 0 {
		return
	}
	t.update(len(set), func(m map[string]Service) {
		for k, v := range set {
			m[strings.ToLower(k)] = v
		}
		for _, k := range del {
			delete(m, strings.ToLower(k))
		}
	})
}

// Replace swaps in a complete dynamic table (full resync).
func (t *Table) Replace(all map[string]Service) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]Service, len(all))
	for k, v := range all {
		m[strings.ToLower(k)] = v
	}
	t.dynamic.Store(&m)
}

// Len is the number of dynamic routes.
func (t *Table) Len() int { return len(*t.dynamic.Load()) }

// update copies the dynamic map (room for grow more entries), lets f change the copy and
// publishes it: readers never see a map being written.
func (t *Table) update(grow int, f func(map[string]Service)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.dynamic.Load()
	m := make(map[string]Service, len(old)+grow)
	for k, v := range old {
		m[k] = v
	}
	f(m)
	t.dynamic.Store(&m)
}
