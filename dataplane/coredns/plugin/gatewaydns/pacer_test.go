package gatewaydns

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func changed(zones ...string) map[string]struct{} {
	m := map[string]struct{}{}
	for _, z := range zones {
		m[z] = struct{}{}
	}
	return m
}

// The pacer's decisions on a made-up clock: an isolated change is due at once, changes
// during a zone's pause are folded into one reload when the pause ends, other zones are not
// held back, and a slow reload lengthens its zone's pause.
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
	p.add(changed("a."))
	expect(0, "a.", 0)
	p.done("a.", at(0), at(2)) // 2 ms reload: pause max(25, 4*2) = 25 ms, until 27

	// Two events of one change and further changes during the pause wait, folded.
	p.add(changed("a."))
	expect(3, "", 24*time.Millisecond)
	p.add(changed("a.", "b."))
	expect(10, "b.", 17*time.Millisecond) // another zone is not held back
	p.done("b.", at(10), at(11))
	p.add(changed("a."))
	expect(20, "", 7*time.Millisecond)
	expect(27, "a.", 0)          // one reload for the three changes of a.
	p.done("a.", at(27), at(47)) // 20 ms reload: pause 80 ms, until 127
	expect(30, "", 0)

	// A slow zone gets a longer pause, capped at maxAdaptivePause.
	p.add(changed("a."))
	expect(100, "", 27*time.Millisecond)
	expect(127, "a.", 0)
	p.done("a.", at(127), at(1127))
	p.add(changed("a."))
	expect(1200, "", time.Second-73*time.Millisecond)

	// A full load covers waiting zones.
	p.clear()
	if p.pending() != 0 {
		t.Fatal("clear left zones waiting")
	}
	expect(2200, "", 0)

	// After a quiet period a change is due at once again, and old pauses are forgotten.
	p.add(changed("a.", "b."))
	expect(5000, "a.,b.", 0)
	if len(p.notUntil) != 0 {
		t.Fatalf("pauses kept after they ended: %v", p.notUntil)
	}

	// coalesce 0: no pacing at all.
	off := newReloadPacer(0)
	for i := 0; i < 3; i++ {
		off.add(changed("a."))
		zones, wait := off.due(at(i))
		if fmt.Sprint(zones) != "[a.]" || wait != 0 {
			t.Fatalf("unpaced: due %v wait %s", zones, wait)
		}
		off.done("a.", at(i), at(i+1))
	}
}
