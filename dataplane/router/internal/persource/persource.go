// Package persource keeps the public ports fair between sources: per source address, how many
// connections are still sending their HTTP head or ClientHello (unfinished peeks) and how many
// are open at all, refusing a new connection that would take a source past its share.
//
// A source is an IPv4 address, or an IPv6 prefix (a /64 by default: one subscriber usually gets
// a whole /64, so counting single IPv6 addresses would let one host take 2^64 shares). The
// table holds an entry only while its source has a connection open, so its size is bounded by
// the router's open connections (its file descriptors), never by how many addresses were seen.
package persource

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Limits are the per-source shares; a zero field is unlimited.
type Limits struct {
	Pending int // unfinished peeks per source
	Conns   int // open connections per source (peeking or proxying)
	// IPv6Prefix groups IPv6 sources by this many leading bits (1-128; 0 means 64).
	IPv6Prefix int
}

// Refusal says which share a refused connection would have exceeded.
type Refusal int

// Refusal kinds (metric label values: Refusal.String()).
const (
	Admitted Refusal = iota
	TooManyPending
	TooManyConns
)

func (r Refusal) String() string {
	switch r {
	case TooManyPending:
		return "pending_per_source"
	case TooManyConns:
		return "connections_per_source"
	}
	return "admitted"
}

type entry struct {
	pending, conns int
	refused        uint64 // since the last summary
}

const shards = 64

type shard struct {
	mu sync.Mutex
	m  map[netip.Prefix]*entry
}

// Table counts connections per source. Safe for concurrent use.
type Table struct {
	lim    Limits
	shards [shards]shard
	// refusals since the last Summary, per kind
	refusedPending, refusedConns atomic.Uint64
}

// New returns an empty table with the given limits.
func New(lim Limits) *Table {
	if lim.IPv6Prefix <= 0 || lim.IPv6Prefix > 128 {
		lim.IPv6Prefix = 64
	}
	t := &Table{lim: lim}
	for i := range t.shards {
		t.shards[i].m = map[netip.Prefix]*entry{}
	}
	return t
}

// Limits returns the table's limits (IPv6Prefix with its default applied).
func (t *Table) Limits() Limits { return t.lim }

// Source is the prefix a remote address is counted under.
func (t *Table) Source(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = t.lim.IPv6Prefix
	}
	p, _ := a.Prefix(bits)
	return p
}

func (t *Table) shard(p netip.Prefix) *shard {
	b := p.Addr().As16()
	h := uint32(2166136261)
	for _, x := range b {
		h = (h ^ uint32(x)) * 16777619
	}
	return &t.shards[h%shards]
}

// Ticket is one admitted connection; PeekDone and Close release its counts (each once).
type Ticket struct {
	t       *Table
	src     netip.Prefix
	peeking bool
	closed  bool
}

// Admit counts a new connection from addr as open and peeking, or refuses it.
func (t *Table) Admit(addr net.Addr) (*Ticket, Refusal) {
	var ip netip.Addr
	if tcp, ok := addr.(*net.TCPAddr); ok {
		ip = tcp.AddrPort().Addr()
	} else if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		ip = ap.Addr()
	} else { // not an IP connection (tests with pipes): nothing to count
		return &Ticket{}, Admitted
	}
	src := t.Source(ip)
	s := t.shard(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[src]
	if e == nil {
		e = &entry{}
		s.m[src] = e
	}
	switch {
	case t.lim.Conns > 0 && e.conns >= t.lim.Conns:
		e.refused++
		t.refusedConns.Add(1)
		t.dropIfIdle(s, src, e)
		return nil, TooManyConns
	case t.lim.Pending > 0 && e.pending >= t.lim.Pending:
		e.refused++
		t.refusedPending.Add(1)
		t.dropIfIdle(s, src, e)
		return nil, TooManyPending
	}
	e.pending++
	e.conns++
	return &Ticket{t: t, src: src, peeking: true}, Admitted
}

// dropIfIdle removes an entry without connections (its refusal count goes with it: the
// summary's totals are kept apart). Called with s.mu held.
func (t *Table) dropIfIdle(s *shard, src netip.Prefix, e *entry) {
	if e.conns == 0 && e.pending == 0 {
		delete(s.m, src)
	}
}

// PeekDone ends the connection's peek phase (routed or not).
func (k *Ticket) PeekDone() {
	if k.t == nil || !k.peeking {
		return
	}
	k.peeking = false
	s := k.t.shard(k.src)
	s.mu.Lock()
	if e := s.m[k.src]; e != nil {
		e.pending--
	}
	s.mu.Unlock()
}

// Close releases the connection (and its peek, if still peeking).
func (k *Ticket) Close() {
	if k.t == nil || k.closed {
		return
	}
	k.closed = true
	s := k.t.shard(k.src)
	s.mu.Lock()
	if e := s.m[k.src]; e != nil {
		if k.peeking {
			e.pending--
		}
		e.conns--
		k.t.dropIfIdle(s, k.src, e)
	}
	k.peeking = false
	s.mu.Unlock()
}

// Count returns the open and peeking connections of the source addr belongs to.
func (t *Table) Count(addr netip.Addr) (conns, pending int) {
	src := t.Source(addr)
	s := t.shard(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[src]; e != nil {
		return e.conns, e.pending
	}
	return 0, 0
}

// Len is the number of sources with a connection open (the table's size).
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Summary is what was refused since the previous summary.
type Summary struct {
	Pending, Conns uint64       // refusals by kind
	Top            netip.Prefix // the source refused most among those still connected
	TopRefused     uint64
	Sources        int // sources with a connection open now
}

// TakeSummary returns the refusals since the last call and resets them.
func (t *Table) TakeSummary() Summary {
	sum := Summary{Pending: t.refusedPending.Swap(0), Conns: t.refusedConns.Swap(0)}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		sum.Sources += len(s.m)
		for p, e := range s.m {
			if e.refused > sum.TopRefused {
				sum.Top, sum.TopRefused = p, e.refused
			}
			e.refused = 0
		}
		s.mu.Unlock()
	}
	return sum
}
