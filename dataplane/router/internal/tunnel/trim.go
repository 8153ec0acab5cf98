package tunnel

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// TrimPeriod is how often Trim looks at the stream count.
const TrimPeriod = 5 * time.Second

// trimDrop is the least fall in open streams (each held 256 KiB of window or more) worth
// returning memory for.
const trimDrop = 16

// fellFrom reports whether the load fell enough from peak to cur to trim.
func fellFrom(peak, cur int64) bool { return peak-cur >= trimDrop && cur <= peak/2 }

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
// TrimPeriod, if at most half as many streams are open as at the peak since the last look
// (and at least trimDrop fewer), Trim forces a collection and releases the freed pages
// (debug.FreeOSMemory: two collections, at most once per period, only when the load fell;
// steady churn does not trigger it).
func (r *Registry) Trim(ctx context.Context) {
	t := time.NewTicker(TrimPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := int64(len(r.global))
		if peak := r.peak.v.Swap(cur); fellFrom(peak, cur) {
			// twice: pooled buffers (sync.Pool) survive one collection in its victim cache
			debug.FreeOSMemory()
			debug.FreeOSMemory()
		}
	}
}
