package main

import (
	"context"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Copy buffers between a stream and its local connection: each direction starts with a small
// buffer and takes a large pooled one while its reads fill the buffer (a bulk transfer:
// fewer, larger reads, writes and yamux frames than io.Copy's 32 KiB), giving it back when
// reads come in small pieces again, so an idle connection holds 2 x 16 KiB.
const (
	smallCopyBuf = 16 << 10
	largeCopyBuf = 256 << 10
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}

// copyBuffered is io.Copy with the buffers above; EOF from src ends it without error.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	small := make([]byte, smallCopyBuf)
	buf := small
	var large *[]byte
	defer func() {
		if large != nil {
			copyBufs.Put(large)
		}
	}()
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		switch {
		case large == nil && n == len(buf):
			large = copyBufs.Get().(*[]byte)
			buf = *large
		case large != nil && n < smallCopyBuf:
			copyBufs.Put(large)
			large, buf = nil, small
		}
	}
}

// streamGauge counts the streams being served, and the most at once since the last trim.
type streamGauge struct{ cur, peak atomic.Int64 }

func (g *streamGauge) add() {
	n := g.cur.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (g *streamGauge) done() { g.cur.Add(-1) }

var streamsServed streamGauge

const trimPeriod = 5 * time.Second

// trimMemory returns the memory of finished streams to the operating system: every
// trimPeriod, if at most half as many streams are served as at the peak since the last look
// (and at least 16 fewer), it forces a
// collection (two: pooled buffers outlive one) and releases the freed pages. Without it, a burst of streams (aborted
// downloads) would keep its footprint until allocation starts a collection again.
func trimMemory(ctx context.Context) {
	t := time.NewTicker(trimPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := streamsServed.cur.Load()
		if peak := streamsServed.peak.Swap(cur); peak-cur >= 16 && cur <= peak/2 {
			// twice: pooled buffers (sync.Pool) survive one collection in its victim cache
			debug.FreeOSMemory()
			debug.FreeOSMemory()
		}
	}
}
