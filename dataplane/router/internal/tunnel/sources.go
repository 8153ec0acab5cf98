package tunnel

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"
)

// SourceLimits bound what one source address may do on the tunnel port. An IPv4 address
// is one source; IPv6 addresses count per /64 (what one customer line usually gets).
type SourceLimits struct {
	// HandshakesPerMinute is the sustained rate of new connections per source (a token
	// bucket holding HandshakeBurst); 0: unlimited.
	HandshakesPerMinute int
	HandshakeBurst      int
	// MaxConnsPerSource bounds a source's open connections on the tunnel port (handshakes
	// in progress and registered tunnels); 0: unlimited.
	MaxConnsPerSource int
	// MaxPendingPerSource bounds a source's connections still in their handshake (not yet a
	// registered tunnel or a matched data connection); 0: unlimited.
	MaxPendingPerSource int
	// MaxSources is the size of the table (least recently seen sources are forgotten
	// first), so memory stays bounded whatever addresses connect.
	MaxSources int
}

// Default source limits: a tunnel client reconnects every 5 s at most (tftunnel's and
// trc's --backoff), 12 handshakes a minute; 600 a minute and a burst of 300 leave room for
// fifty clients behind one NAT reconnecting at once and again, while one address can no
// longer keep the router busy with TLS handshakes (each costs a signature).
const (
	DefaultHandshakesPerMinute = 600
	DefaultHandshakeBurst      = 300
	DefaultMaxConnsPerSource   = 1024
	DefaultMaxSources          = 65536
	// DefaultMaxPendingPerSource: 512 connections in their handshake. A handshake takes a
	// round trip or two and a data connection's ticket one packet, but a tunnel may have 256
	// tickets waiting at once (DefaultPendingTickets), each a data connection on its way:
	// two tunnels behind one address at their full burst.
	DefaultMaxPendingPerSource = 512
)

// Sources is the per-source table: a fixed-size LRU of token buckets and connection
// counts (about 150 bytes an entry: 10 MB at 65,536 sources).
type Sources struct {
	lim SourceLimits
	now func() time.Time

	mu  sync.Mutex
	lru *list.List // of *source, most recent first
	m   map[netip.Addr]*list.Element
}

type source struct {
	key     netip.Addr
	tokens  float64
	last    time.Time
	conns   int
	pending int
}

// NewSources returns an empty table.
func NewSources(l SourceLimits) *Sources {
	if l.MaxSources <= 0 {
		l.MaxSources = DefaultMaxSources
	}
	if l.HandshakeBurst <= 0 {
		l.HandshakeBurst = max(1, l.HandshakesPerMinute/2)
	}
	return &Sources{lim: l, now: time.Now, lru: list.New(), m: map[netip.Addr]*list.Element{}}
}

// SourceKey is the table key of a remote address: the IPv4 address, or the IPv6 /64.
func SourceKey(a net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// Admit decides whether a new connection from key may go on: a handshake token is left (see
// Charge) and the source is under its connection and pending limits. If it may, settle
// must be called when its handshake ends (registered, matched or refused) and release
// once when the connection closes (release settles too); otherwise reason names the limit.
func (s *Sources) Admit(key netip.Addr) (release, settle func(), reason string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var src *source
	if e, ok := s.m[key]; ok {
		s.lru.MoveToFront(e)
		src = e.Value.(*source)
	} else {
		if s.lru.Len() >= s.lim.MaxSources {
			// Forget the least recently seen source. If it still has connections open
			// their releases decrement the forgotten entry, which is harmless.
			old := s.lru.Back()
			s.lru.Remove(old)
			delete(s.m, old.Value.(*source).key)
		}
		src = &source{key: key, tokens: float64(s.lim.HandshakeBurst), last: now}
		s.m[key] = s.lru.PushFront(src)
	}
	if s.lim.HandshakesPerMinute > 0 {
		src.tokens = min(float64(s.lim.HandshakeBurst),
			src.tokens+now.Sub(src.last).Minutes()*float64(s.lim.HandshakesPerMinute))
		src.last = now
		if src.tokens < 1 {
			return nil, nil, ReasonSourceRate
		}
	}
	if s.lim.MaxConnsPerSource > 0 && src.conns >= s.lim.MaxConnsPerSource {
		return nil, nil, ReasonSourceConns
	}
	if s.lim.MaxPendingPerSource > 0 && src.pending >= s.lim.MaxPendingPerSource {
		return nil, nil, ReasonSourcePending
	}
	src.conns++
	src.pending++
	var settled, released sync.Once
	settle = func() {
		settled.Do(func() {
			s.mu.Lock()
			src.pending--
			s.mu.Unlock()
		})
	}
	return func() {
		settle()
		released.Do(func() {
			s.mu.Lock()
			src.conns--
			s.mu.Unlock()
		})
	}, settle, ""
}

// Count returns the open and pending connections of key's source (tests).
func (s *Sources) Count(key netip.Addr) (conns, pending int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		src := e.Value.(*source)
		return src.conns, src.pending
	}
	return 0, 0
}

// Charge takes the handshake token of a connection from key that Admit let in: Admit only
// checks that one is left. The acceptor charges every connection once its first byte says it
// is a handshake (before any TLS work), or when it sends nothing, or a ticket that matches no
// waiting public connection; a data connection whose ticket matches is a public connection,
// not a handshake, and is never charged, so a busy tunnel does not use up its client's rate.
// Connections admitted together may take the bucket below zero: the source then waits
// longer.
func (s *Sources) Charge(key netip.Addr) {
	if s.lim.HandshakesPerMinute <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		e.Value.(*source).tokens--
	}
}

// Len is the number of sources in the table.
func (s *Sources) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}
