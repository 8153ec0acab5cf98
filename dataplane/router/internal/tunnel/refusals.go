package tunnel

import (
	"context"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Reasons a tunnel connection is refused: metric labels
// (tfrouter_tunnel_registrations_total{result}) and keys of the summary log line.
const (
	ReasonSourceRate     = "source_rate_limited"    // the source's handshakes per minute
	ReasonSourceConns    = "source_conns_limited"   // the source's open connections
	ReasonSourcePending  = "source_pending_limited" // the source's handshakes in progress
	ReasonTooManyPending = "too_many_pending"       // handshakes in progress over all sources (Acceptor.MaxPending)
	ReasonBadHandshake   = "bad_handshake"          // junk, timeout, malformed frames
	ReasonUnknownSecret  = "unknown_secret"         // no live route references the secret
	ReasonLegacyDisabled = "legacy_disabled"        // a trc handshake while legacy is off
	ReasonAuthOff        = "authenticated_off"      // a TLS client while the router has no key
	ReasonTLS            = "tls_failed"             // the TLS handshake failed
	ReasonBadProof       = "bad_proof"              // the proof of the secret is wrong
	ReasonProtected      = "protected"              // a legacy client on an authenticated tunnel
	ReasonTooMany        = "too_many_tunnels"       // the registry is full
	ReasonBadTicket      = "bad_ticket"             // a data connection with an unknown, used or expired ticket, or from another source
	ReasonOther          = "error"                  // anything else (yamux setup)
)

// Refusals counts refused handshakes and logs them as one summary line per interval, so a
// flood costs no log line per attempt.
type Refusals struct {
	Log      *slog.Logger
	Interval time.Duration // 0: 30 s

	mu      sync.Mutex
	counts  map[string]int
	sources map[netip.Addr]struct{} // distinct sources in the interval, at most maxSourcesSeen
}

const maxSourcesSeen = 1024

// Note counts one refusal.
func (r *Refusals) Note(reason string, src netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
		r.sources = map[netip.Addr]struct{}{}
	}
	r.counts[reason]++
	if len(r.sources) < maxSourcesSeen {
		r.sources[src] = struct{}{}
	}
}

// Run logs a summary every interval until ctx ends, and a last one then.
func (r *Refusals) Run(ctx context.Context) {
	iv := r.Interval
	if iv <= 0 {
		iv = 30 * time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Flush()
			return
		case <-t.C:
			r.Flush()
		}
	}
}

// Flush logs what was counted since the last summary, if anything.
func (r *Refusals) Flush() {
	r.mu.Lock()
	counts, sources := r.counts, len(r.sources)
	r.counts, r.sources = nil, nil
	r.mu.Unlock()
	if len(counts) == 0 {
		return
	}
	keys := make([]string, 0, len(counts))
	total := 0
	for k, n := range counts {
		keys = append(keys, k)
		total += n
	}
	sort.Strings(keys)
	attrs := []any{"total", total}
	for _, k := range keys {
		attrs = append(attrs, k, counts[k])
	}
	src := any(sources)
	if sources >= maxSourcesSeen {
		src = ">=1024"
	}
	attrs = append(attrs, "sources", src)
	r.Log.Warn("tunnel handshakes refused (summary)", attrs...)
}
