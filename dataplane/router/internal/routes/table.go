package routes

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
)

// shards splits the dynamic routes so that a change copies one shard, not the whole table:
// with thousands of routes and changes arriving one at a time, copying everything per
// change was most of the route feed's CPU time.
const shards = 64

// Table answers lookups from immutable snapshots (one atomic load per connection) and takes
// updates under a mutex that copies the shards they touch (updates are rare, lookups hot).
type Table struct {
	static   map[string]Service
	catchAll *Service

	seed    maphash.Seed
	mu      sync.Mutex // serialises writers
	dynamic [shards]atomic.Pointer[map[string]Service]
	n       atomic.Int64 // dynamic routes over all shards
}

// NewTable builds a table from the static services of router.toml.
func NewTable(static map[string]Service, catchAllName string) *Table {
	t := &Table{static: map[string]Service{}, seed: maphash.MakeSeed()}
	for k, v := range static {
		v.Static = true
		if k == catchAllName {
			c := v
			t.catchAll = &c
			continue
		}
		t.static[strings.ToLower(k)] = v
	}
	empty := map[string]Service{} // never written: every update stores a fresh map
	for i := range t.dynamic {
		t.dynamic[i].Store(&empty)
	}
	return t
}

// CatchAllRoute names the route of connections served by the static CATCH_ALL entry.
const CatchAllRoute = "CATCH_ALL"

func (t *Table) shard(host string) int { return int(maphash.String(t.seed, host) % shards) }

// Lookup finds the service for host in trs's order: static map, redis, static CATCH_ALL.
// It also returns the name of the matched route (the host, or CatchAllRoute).
func (t *Table) Lookup(host string) (Service, string, bool) {
	host = strings.ToLower(host)
	if s, ok := t.static[host]; ok {
		return s, host, true
	}
	if s, ok := (*t.dynamic[t.shard(host)].Load())[host]; ok {
		return s, host, true
	}
	if t.catchAll != nil {
		return *t.catchAll, CatchAllRoute, true
	}
	return Service{}, "", false
}

// Set adds or replaces the dynamic route for host.
func (t *Table) Set(host string, s Service) { t.Apply(map[string]Service{host: s}, nil) }

// Delete removes the dynamic route for host.
func (t *Table) Delete(host string) { t.Apply(nil, []string{host}) }

// Apply sets the routes in set and removes the hosts in del, copying each shard they touch
// once, so a burst of changes costs about one copy of the table instead of one per host. A
// host in both is removed.
func (t *Table) Apply(set map[string]Service, del []string) {
	if len(set) == 0 && len(del) == 0 {
		return
	}
	type change struct {
		host string
		svc  Service
		del  bool
	}
	var byShard [shards][]change
	for k, v := range set {
		k = strings.ToLower(k)
		i := t.shard(k)
		byShard[i] = append(byShard[i], change{host: k, svc: v})
	}
	for _, k := range del {
		k = strings.ToLower(k)
		i := t.shard(k)
		byShard[i] = append(byShard[i], change{host: k, del: true})
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, changes := range byShard {
		if len(changes) == 0 {
			continue
		}
		old := *t.dynamic[i].Load()
		m := make(map[string]Service, len(old)+len(changes))
		for k, v := range old {
			m[k] = v
		}
		for _, c := range changes { // deletes come last: a host in both ends removed
			if c.del {
				delete(m, c.host)
			} else {
				m[c.host] = c.svc
			}
		}
		t.n.Add(int64(len(m) - len(old)))
		t.dynamic[i].Store(&m)
	}
}

// Replace swaps in a complete dynamic table (full resync). Each shard is swapped on its
// own: a lookup sees its host's old or new route, never a half-built map.
func (t *Table) Replace(all map[string]Service) {
	var next [shards]map[string]Service
	for i := range next {
		next[i] = make(map[string]Service, len(all)/shards+1)
	}
	for k, v := range all {
		k = strings.ToLower(k)
		next[t.shard(k)][k] = v
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for i := range next {
		n += len(next[i])
		t.dynamic[i].Store(&next[i])
	}
	t.n.Store(int64(n))
}

// Len is the number of dynamic routes.
func (t *Table) Len() int { return int(t.n.Load()) }
