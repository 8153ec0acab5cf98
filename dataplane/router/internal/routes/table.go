package routes

import (
	"crypto/sha256"
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

	// secrets counts the routes (static and dynamic) that reference each tunnel secret, so
	// the tunnel listener can refuse a handshake for a secret no route uses before it
	// creates anything for it. Written under mu, read under smu.
	smu     sync.RWMutex
	secrets map[string]*secretRefs
	ids     map[TunnelID]string

	// OnRevoke, if set (before the first update), is called with the tunnel routes an
	// update ended, after the update is visible to Lookup and HasSecret and before the
	// next update starts (under the writers' mutex, so revocations arrive in order). It
	// must not call back into the table's writers.
	OnRevoke func([]Revoked)
}

// Revoked is a tunnel route an update ended: Host no longer routes to the tunnel of Secret
// (its route was deleted or names another secret now). SecretGone: no route references
// Secret any more, so its tunnel has nothing left to serve.
type Revoked struct {
	Host       string
	Secret     string
	SecretGone bool
}

type secretRefs struct {
	n  int
	id TunnelID
}

// NewTable builds a table from the static services of router.toml.
func NewTable(static map[string]Service, catchAllName string) *Table {
	t := &Table{static: map[string]Service{}, seed: maphash.MakeSeed(),
		secrets: map[string]*secretRefs{}, ids: map[TunnelID]string{}}
	for k, v := range static {
		v.Static = true
		t.ref(v.ClientSecret, 1)
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
	var ended []Revoked
	for i, changes := range byShard {
		if len(changes) == 0 {
			continue
		}
		old := *t.dynamic[i].Load()
		m := make(map[string]Service, len(old)+len(changes))
		for k, v := range old {
			m[k] = v
		}
		t.smu.Lock()
		for _, c := range changes { // deletes come last: a host in both ends removed
			if prev, ok := m[c.host]; ok {
				t.ref(prev.ClientSecret, -1)
			}
			if c.del {
				delete(m, c.host)
			} else {
				m[c.host] = c.svc
				t.ref(c.svc.ClientSecret, 1)
			}
		}
		t.smu.Unlock()
		if t.OnRevoke != nil {
			seen := make(map[string]struct{}, len(changes))
			for _, c := range changes {
				if _, dup := seen[c.host]; dup {
					continue // a host both set and deleted: one revocation
				}
				seen[c.host] = struct{}{}
				ended = t.ended(ended, c.host, old[c.host], m[c.host])
			}
		}
		t.n.Add(int64(len(m) - len(old)))
		t.dynamic[i].Store(&m)
	}
	t.revoke(ended)
}

// ended appends the revocation of host's tunnel route when it changed from prev to cur
// (cur zero: deleted). Callers hold mu.
func (t *Table) ended(out []Revoked, host string, prev, cur Service) []Revoked {
	if t.OnRevoke == nil || prev.ClientSecret == "" || prev.ClientSecret == cur.ClientSecret {
		return out
	}
	if _, static := t.static[host]; static {
		return out // the static route serves host whatever redis says
	}
	return append(out, Revoked{Host: host, Secret: prev.ClientSecret})
}

// revoke marks the secrets no route references any more and calls OnRevoke. Callers hold
// mu (not smu).
func (t *Table) revoke(ended []Revoked) {
	if len(ended) == 0 || t.OnRevoke == nil {
		return
	}
	t.smu.RLock()
	for i := range ended {
		_, ok := t.secrets[ended[i].Secret]
		ended[i].SecretGone = !ok
	}
	t.smu.RUnlock()
	t.OnRevoke(ended)
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
	var old [shards]map[string]Service
	t.smu.Lock()
	for i := range t.dynamic {
		old[i] = *t.dynamic[i].Load()
		for _, v := range old[i] {
			t.ref(v.ClientSecret, -1)
		}
	}
	for _, v := range all {
		t.ref(v.ClientSecret, 1)
	}
	t.smu.Unlock()
	n := 0
	for i := range next {
		n += len(next[i])
		t.dynamic[i].Store(&next[i])
	}
	t.n.Store(int64(n))
	if t.OnRevoke == nil {
		return
	}
	var ended []Revoked
	for i := range old {
		for host, prev := range old[i] {
			ended = t.ended(ended, host, prev, next[t.shard(host)][host])
		}
	}
	t.revoke(ended)
}

// TunnelID names a tunnel secret without revealing it: what an authenticated tunnel client
// sends to say which secret it proves (internal/tunnel, TunnelIDOf).
type TunnelID [32]byte

// TunnelIDOf is SHA-256 over a fixed label and the secret.
func TunnelIDOf(secret string) TunnelID {
	h := sha256.New()
	h.Write([]byte(tunnelIDLabel))
	h.Write([]byte(secret))
	var id TunnelID
	h.Sum(id[:0])
	return id
}

const tunnelIDLabel = "tfgateway tunnel id v1\x00"

// ref adds d references to secret (callers hold smu for writing, or own t alone).
func (t *Table) ref(secret string, d int) {
	if secret == "" {
		return
	}
	r := t.secrets[secret]
	if r == nil {
		if d < 0 {
			return
		}
		r = &secretRefs{id: TunnelIDOf(secret)}
		t.secrets[secret] = r
		t.ids[r.id] = secret
	}
	r.n += d
	if r.n <= 0 {
		delete(t.secrets, secret)
		delete(t.ids, r.id)
	}
}

// HasSecret reports whether a live route (static or from redis) references secret.
func (t *Table) HasSecret(secret string) bool {
	t.smu.RLock()
	defer t.smu.RUnlock()
	_, ok := t.secrets[secret]
	return ok
}

// SecretByID returns the secret a live route references whose TunnelID is id.
func (t *Table) SecretByID(id TunnelID) (string, bool) {
	t.smu.RLock()
	defer t.smu.RUnlock()
	s, ok := t.ids[id]
	return s, ok
}

// Secrets is the number of distinct tunnel secrets routes reference.
func (t *Table) Secrets() int {
	t.smu.RLock()
	defer t.smu.RUnlock()
	return len(t.secrets)
}

// Len is the number of dynamic routes.
func (t *Table) Len() int { return int(t.n.Load()) }
