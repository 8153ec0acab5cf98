package gatewaydns

import (
	"sort"
	"time"
)

// reloadCostFactor and reloadBurst shape how often one zone may be read whole: a zone that
// changes without rest spends at most 1/(1+reloadCostFactor) of the time in reloads, and a
// zone that was quiet may first use up to reloadBurst of reload time back to back.
const (
	reloadCostFactor = 4
	reloadBurst      = time.Second
)

// reloadPacer decides when a zone whose hash changed in unknown fields is read whole. Such a
// reload reads and digests the whole hash, so reloading on every event would cost O(zone
// size) per write in a burst of writes into one large zone. Each zone has a debt: a reload
// adds (1+reloadCostFactor) times what it took, and the debt is paid off in wall time; a
// zone is due while its debt is within reloadBurst plus what its last reload added. So:
//
//   - an isolated change is due at once, however slow the zone's last reload was: the delay
//     is bounded by the reload itself;
//   - under sustained changes a zone is reloaded at most ~1/(1+reloadCostFactor) of the
//     time, and every change that arrives while it waits is folded into that one reload;
//   - `coalesce` is the minimum pause between two reloads of one zone (0: no pacing).
//
// It is used by the loader goroutine only, so it has no lock; time is passed in, so its
// decisions are tested without a clock.
type reloadPacer struct {
	coalesce time.Duration
	waiting  map[string]time.Time // changed zones not reloaded yet, with their first change
	debts    map[string]reloadDebt
}

type reloadDebt struct {
	amount time.Duration // reload time owed at `at`
	at     time.Time     // end of the last reload
	last   time.Duration // what the last reload owes: always allowed, so one reload never delays the next change
}

func newReloadPacer(coalesce time.Duration) *reloadPacer {
	return &reloadPacer{coalesce: coalesce, waiting: map[string]time.Time{}, debts: map[string]reloadDebt{}}
}

// add records a change of zone at now (the first change of a waiting zone counts).
func (p *reloadPacer) add(zone string, now time.Time) {
	if _, ok := p.waiting[zone]; !ok {
		p.waiting[zone] = now
	}
}

// dueAt is when a waiting zone may be reloaded.
func (p *reloadPacer) dueAt(zone string, changed time.Time) time.Time {
	at := changed
	if d, ok := p.debts[zone]; ok && p.coalesce > 0 {
		at = laterOf(at, d.at.Add(p.coalesce))
		at = laterOf(at, d.at.Add(d.amount-d.last-reloadBurst))
	}
	return at
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// due removes and returns the changed zones that may be reloaded at now, in sorted order,
// and how long until the next waiting zone is due (0 when none waits).
func (p *reloadPacer) due(now time.Time) ([]string, time.Duration) {
	var out []string
	var wait time.Duration
	for z, changed := range p.waiting {
		if at := p.dueAt(z, changed); now.Before(at) {
			if d := at.Sub(now); wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		out = append(out, z)
		delete(p.waiting, z)
	}
	// Debts that are paid off are forgotten, so the map holds only recently reloaded zones.
	for z, d := range p.debts {
		if !now.Before(d.at.Add(max(d.amount, p.coalesce))) {
			delete(p.debts, z)
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
	owed := time.Duration(0)
	if d, ok := p.debts[zone]; ok {
		owed = max(0, d.amount-end.Sub(d.at))
	}
	last := (1 + reloadCostFactor) * end.Sub(start)
	p.debts[zone] = reloadDebt{amount: owed + last, at: end, last: last}
}

// clear forgets the waiting zones: a full load covers them.
func (p *reloadPacer) clear() {
	clear(p.waiting)
}

// pending reports how many changed zones wait.
func (p *reloadPacer) pending() int { return len(p.waiting) }
