package acme

import (
	"errors"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestGate(perHour int) (*Gate, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := NewGate(time.Minute, 8*time.Minute, perHour, 3)
	g.now = c.now
	return g, c
}

func refusal(t *testing.T, err error, reason string) *Refusal {
	t.Helper()
	var r *Refusal
	if !errors.As(err, &r) || r.Reason != reason || !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want a %s refusal", err, reason)
	}
	return r
}

// Failures back off per name: RetryMin doubling to RetryMax; a success clears them.
func TestGateBackoff(t *testing.T) {
	g, c := newTestGate(100)
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 8 * time.Minute} {
		if err := g.Ready("a.example"); err != nil {
			t.Fatalf("attempt %d refused: %v", i, err)
		}
		if err := g.Start("a.example"); err != nil {
			t.Fatal(err)
		}
		if got := g.Failed("a.example", errors.New("connection refused")); got != want {
			t.Fatalf("failure %d: back-off %v, want %v", i+1, got, want)
		}
		r := refusal(t, g.Ready("a.example"), ReasonBackoff)
		if r.Retry != want {
			t.Fatalf("retry in %v, want %v", r.Retry, want)
		}
		if g.Ready("b.example") != nil {
			t.Fatal("another name is held back by a.example's failures")
		}
		c.advance(want)
	}
	if got := g.Failing(); got["a.example"] != "connection refused" || len(got) != 1 {
		t.Fatalf("failing = %v", got)
	}
	g.Succeeded("a.example")
	if len(g.Failing()) != 0 {
		t.Fatal("a success leaves the name failing")
	}
	if got := g.Failed("a.example", errors.New("again")); got != time.Minute {
		t.Fatalf("after a success the back-off starts over, got %v", got)
	}
}

// One attempt per name within RetryMin even after a success, and a global hourly budget.
func TestGateSpacingAndRate(t *testing.T) {
	g, c := newTestGate(2)
	if err := g.Start("a.example"); err != nil {
		t.Fatal(err)
	}
	g.Succeeded("a.example")
	refusal(t, g.Ready("a.example"), ReasonBackoff)
	if err := g.Start("b.example"); err != nil {
		t.Fatal(err)
	}
	refusal(t, g.Start("c.example"), ReasonRate) // budget of 2 spent
	c.advance(30 * time.Minute)                  // refills one token
	if err := g.Start("c.example"); err != nil {
		t.Fatalf("after half an hour: %v", err)
	}
}

// The gate tracks at most maxNames names and forgets names whose route went away.
func TestGateBounded(t *testing.T) {
	g, c := newTestGate(100)
	for _, n := range []string{"a", "b", "c"} {
		if err := g.Start(n); err != nil {
			t.Fatal(err)
		}
		g.Failed(n, errors.New("x"))
	}
	refusal(t, g.Start("d"), ReasonTracked)
	g.Forget(func(name string) bool { return name != "a" })
	if err := g.Start("d"); err != nil {
		t.Fatalf("after forgetting a: %v", err)
	}
	if _, ok := g.Failing()["a"]; ok {
		t.Fatal("a still tracked")
	}
	c.advance(time.Hour)
	g.Succeeded("d")
	g.Forget(func(string) bool { return true })
	if len(g.names) != 2 { // b and c keep failing; d's spacing passed without failures
		t.Fatalf("tracked %d names, want 2", len(g.names))
	}
}
