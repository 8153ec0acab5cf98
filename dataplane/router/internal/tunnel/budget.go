package tunnel

import (
	"errors"
	"sync"

	yamux "github.com/libp2p/go-yamux/v5"
)

// MinStreamWindow is the receive window every yamux stream starts with (fixed by the
// protocol: a peer may send this much on a new stream before any window update), so it is
// the least memory a tunnel stream can hold.
const MinStreamWindow = 256 << 10

// ErrOverBudget is returned by a budget that cannot grant more receive window.
var ErrOverBudget = errors.New("tunnel memory budget exhausted")

// budget bounds the receive buffers of one tunnel (go-yamux's MemoryManager), and, as the
// parent of every tunnel's budget, of all tunnels together. Each stream reserves
// MinStreamWindow when it opens (the slots of the registry guarantee room for it, in its
// tunnel and overall); a stream's window grows beyond that (go-yamux doubles it while the
// reader keeps up, up to MuxConfig's MaxStreamWindowSize) only while the growth leaves room
// for every stream slot still free, in its tunnel and overall, so the receive buffers never
// exceed limit bytes, per tunnel and in all.
type budget struct {
	limit  int // bytes
	slots  int // streams the registry may open at once
	parent *budget

	mu      sync.Mutex
	used    int // bytes reserved by open streams
	streams int // open streams (spans)
}

func newBudget(limit, slots int, parent *budget) *budget {
	return &budget{limit: limit, slots: slots, parent: parent}
}

// room reports whether size more bytes leave MinStreamWindow for every free slot (callers
// hold mu).
func (b *budget) room(size int) bool {
	return b.used+size+max(b.slots-b.streams, 0)*MinStreamWindow <= b.limit
}

// span is one stream's share of the budget.
func (b *budget) span() (yamux.MemoryManager, error) { return &span{b: b}, nil }

// Used is the bytes reserved by the tunnel's streams now.
func (b *budget) Used() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

type span struct {
	b        *budget
	reserved int
	opened   bool
	done     bool
}

// ReserveMemory: priority 255 is go-yamux's reservation for a new stream's initial window,
// lower priorities its requests to grow a window.
// The tunnel's lock is taken before the parent's (never the other way round).
func (s *span) ReserveMemory(size int, prio uint8) error {
	b, p := s.b, s.b.parent
	b.mu.Lock()
	defer b.mu.Unlock()
	if p != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
	}
	if s.done {
		return ErrOverBudget
	}
	if prio == 255 && !s.opened {
		s.opened = true
		b.streams++
		if p != nil {
			p.streams++
		}
	} else if !b.room(size) || (p != nil && !p.room(size)) {
		return ErrOverBudget
	}
	b.used += size
	if p != nil {
		p.used += size
	}
	s.reserved += size
	return nil
}

func (s *span) ReleaseMemory(size int) {
	b, p := s.b, s.b.parent
	b.mu.Lock()
	defer b.mu.Unlock()
	size = min(size, s.reserved)
	s.reserved -= size
	b.used -= size
	if p != nil {
		p.mu.Lock()
		p.used -= size
		p.mu.Unlock()
	}
}

// Done returns everything the stream held (go-yamux calls it when the stream is gone).
func (s *span) Done() {
	b, p := s.b, s.b.parent
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.done {
		return
	}
	s.done = true
	b.used -= s.reserved
	if s.opened {
		b.streams--
	}
	if p != nil {
		p.mu.Lock()
		p.used -= s.reserved
		if s.opened {
			p.streams--
		}
		p.mu.Unlock()
	}
	s.reserved = 0
}
