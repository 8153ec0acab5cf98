package gatewaydns

import (
	"sort"
	"time"
)

// reloadCostFactor and maxAdaptivePause shape the pause between two reloads of one zone:
// at least `coalesce`, and at least reloadCostFactor times what the last reload of that
// zone took (capped at maxAdaptivePause), so that a zone changing without pause costs at
// most about 1/(1+reloadCostFactor) of a core however large it is.
const (
	reloadCostFactor = 4
	maxAdaptivePause = time.Second
)

// reloadPacer decides when a changed zone is reloaded. A zone reload reads and digests the
// whole hash, so reloading on every event is quadratic over a burst of writes into one large
// zone (each agent change even sends two events: the keyspace notification and the agent's
// PUBLISH). The pacer keeps single changes instant and bounds bursts:
//
//   - a change to a zone that was not reloaded within its pause is due at once;
//   - a change arriving sooner (or while the zone's reload runs) waits until the pause has
//     passed, and every change that arrives meanwhile is folded into that one reload.
//
// It is used by the loader goroutine only, so it has no lock; time is passed in, so its
// decisions are tested without a clock.
type reloadPacer struct {
	coalesce time.Duration        // minimum pause; 0 turns pacing off (every change reloads at once)
	waiting  map[string]bool      // changed zones not reloaded yet
	notUntil map[string]time.Time // earliest start of a zone's next reload
}

func newReloadPacer(coalesce time.Duration) *reloadPacer {
	return &reloadPacer{coalesce: coalesce, waiting: map[string]bool{}, notUntil: map[string]time.Time{}}
}

// add records changed zones.
func (p *reloadPacer) add(zones map[string]struct{}) {
	for z := range zones {
		p.waiting[z] = true
	}
}

// due removes and returns the changed zones that may be reloaded at now, in sorted order,
// and how long until the next waiting zone is due (0 when none waits).
func (p *reloadPacer) due(now time.Time) ([]string, time.Duration) {
	var out []string
	var wait time.Duration
	for z := range p.waiting {
		if until, ok := p.notUntil[z]; ok && now.Before(until) {
			if d := until.Sub(now); wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		out = append(out, z)
		delete(p.waiting, z)
	}
	// Pauses that are over are forgotten, so the map holds only recently reloaded zones.
	for z, until := range p.notUntil {
		if !now.Before(until) {
			delete(p.notUntil, z)
		}
	}
	sort.Strings(out)
	return out, wait
}

// done records a reload of zone that ran from start to end.
func (p *reloadPacer) done(zone string, start, end time.Time) {
	if p.coalesce <= 0 {
		return
	}
	pause := min(reloadCostFactor*end.Sub(start), maxAdaptivePause)
	p.notUntil[zone] = end.Add(max(pause, p.coalesce))
}

// clear forgets the waiting zones: a full load covers them.
func (p *reloadPacer) clear() {
	clear(p.waiting)
}

// pending reports how many changed zones wait.
func (p *reloadPacer) pending() int { return len(p.waiting) }
