package gatewaydns

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The pacer's decisions on a made-up clock: an isolated change is due at once (also right
// after a slow reload: the delay is bounded by the reload itself), changes during a zone's
// pause are folded into one reload, other zones are not held back, sustained changes cost at
// most about a fifth of the time, and a zone may be deferred.
func TestReloadPacer(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	p := newReloadPacer(25 * time.Millisecond)
	expect := func(now int, wantZones string, wantWait time.Duration) {
		t.Helper()
		zones, wait := p.due(at(now))
		if got := strings.Join(zones, ","); got != wantZones || wait != wantWait {
			t.Fatalf("at %d ms: due %q wait %s, want %q wait %s", now, got, wait, wantZones, wantWait)
		}
	}

	// Isolated change: at once.
	p.add("a.", at(0))
	expect(0, "a.", 0)
	p.done("a.", at(0), at(2)) // 2 ms reload; the next one not before 27 ms (coalesce)

	// Changes during the pause wait and are folded; another zone is not held back.
	p.add("a.", at(3))
	expect(3, "", 24*time.Millisecond)
	p.add("a.", at(10))
	p.add("b.", at(10))
	expect(10, "b.", 17*time.Millisecond)
	p.done("b.", at(10), at(11))
	expect(27, "a.", 0) // one reload for the changes of a.
	p.done("a.", at(27), at(29))

	// A slow reload (600 ms, as seen with the old pacer) does not delay an isolated change
	// that comes after it: only the reload itself did.
	p.add("a.", at(1000))
	expect(1000, "a.", 0)
	p.done("a.", at(1000), at(1600))
	p.add("a.", at(1630))
	expect(1630, "a.", 0)
	// But sustained slow reloads are paced: the debt (5 x 600 ms x 2, minus the time passed)
	// is over the burst allowance, so the next waits until it is paid down to it.
	p.done("a.", at(1630), at(2230))
	p.add("a.", at(2240))
	zones, wait := p.due(at(2240))
	if len(zones) != 0 || wait < time.Second {
		t.Fatalf("after two slow reloads back to back: due %v wait %s, want a pause of over 1s", zones, wait)
	}

	// Sustained changes of a zone whose reload takes 10 ms: at most ~1/5 of the time reloading.
	q := newReloadPacer(25 * time.Millisecond)
	busy, now := time.Duration(0), at(10000)
	for now.Before(at(20000)) {
		q.add("c.", now)
		if zones, wait := q.due(now); len(zones) == 1 {
			q.done("c.", now, now.Add(10*time.Millisecond))
			busy += 10 * time.Millisecond
			now = now.Add(10 * time.Millisecond)
		} else {
			now = now.Add(wait)
		}
	}
	if frac := busy.Seconds() / 10; frac > 0.2+0.1 {
		t.Fatalf("sustained changes: %.2f of the time reloading, want about 0.2 at most", frac)
	}

	// A full load covers waiting zones; old debts are forgotten.
	p.clear()
	if p.pending() != 0 {
		t.Fatal("clear left zones waiting")
	}
	p.add("a.", at(60000))
	p.add("b.", at(60000))
	expect(60000, "a.,b.", 0)
	if len(p.debts) != 0 {
		t.Fatalf("debts kept after they were paid: %v", p.debts)
	}

	// coalesce 0: no pacing at all.
	off := newReloadPacer(0)
	for i := 0; i < 3; i++ {
		off.add("a.", at(i))
		zones, wait := off.due(at(i))
		if fmt.Sprint(zones) != "[a.]" || wait != 0 {
			t.Fatalf("unpaced: due %v wait %s", zones, wait)
		}
		off.done("a.", at(i), at(i+500))
	}
}
