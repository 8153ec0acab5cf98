package tunnel

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// TrimPeriod is how often Trim looks at the stream count.
const TrimPeriod = 5 * time.Second

// peakStreams records the most streams open at once since the last look.
type peakStreams struct{ v atomic.Int64 }

func (p *peakStreams) saw(n int) {
	for {
		cur := p.v.Load()
		if int64(n) <= cur || p.v.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// Trim returns the memory of finished streams to the operating system. Go frees a dead
// stream's buffers at its next collection and gives the pages back only gradually, and a
// collection needs allocation to start, so after a burst of streams (aborted downloads, a
// flood of connections) a quiet router would keep the burst's footprint for minutes. Every
// TrimPeriod, if fewer streams are open than at the peak since the last look, Trim forces a
// collection and releases the freed pages (debug.FreeOSMemory: two collections of a heap that
// is mostly copy buffers, at most once per period, only while the load falls).
func (r *Registry) Trim(ctx context.Context) {
	t := time.NewTicker(TrimPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := len(r.global)
		if peak := r.peak.v.Swap(int64(cur)); int64(cur) < peak {
			// twice: pooled buffers (sync.Pool) survive one collection in its victim cache
			debug.FreeOSMemory()
			debug.FreeOSMemory()
		}
	}
}
