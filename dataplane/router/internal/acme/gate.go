package acme

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Reasons a certificate is not obtained for a name (metric label values of
// tfrouter_acme_decisions_total).
const (
	ReasonNotRouted = "not_routed"
	ReasonBackoff   = "backoff"
	ReasonRate      = "rate_limited"
	ReasonBusy      = "busy"
	ReasonTracked   = "too_many_names"
)

// Refusal says why a certificate is not obtained now; it is what a refused TLS handshake
// fails with (never logged per handshake: the router counts them).
type Refusal struct {
	Reason string
	Name   string
	Retry  time.Duration // when the name may be tried again (backoff), else 0
}

func (r *Refusal) Error() string {
	switch r.Reason {
	case ReasonNotRouted:
		return fmt.Sprintf("no certificate for %q: the gateway does not terminate TLS for it", r.Name)
	case ReasonBackoff:
		return fmt.Sprintf("no certificate for %q yet: the last attempt failed, next in %s", r.Name, r.Retry.Round(time.Second))
	case ReasonRate:
		return fmt.Sprintf("no certificate for %q yet: the gateway's issuance rate limit is reached", r.Name)
	case ReasonTracked:
		return fmt.Sprintf("no certificate for %q: too many names waiting for a retry", r.Name)
	}
	return fmt.Sprintf("no certificate for %q: too many handshakes waiting for certificates", r.Name)
}

// ErrRefused matches every *Refusal with errors.Is.
var ErrRefused = errors.New("certificate refused")

// Is makes errors.Is(err, ErrRefused) true.
func (r *Refusal) Is(target error) bool { return target == ErrRefused }

// Gate decides when an attempt to obtain a certificate may start: never twice for one
// name within RetryMin (after a success) or its back-off (after failures: RetryMin
// doubling up to RetryMax), and at most Rate new certificates per hour over all names,
// so no client can make the gateway hammer the ACME server or fill its disk. Whether a
// name is routed at all is asked before (Manager); the gate only sees routed names, and
// forgets names whose route went away (Forget), so it stays as small as the route table.
type Gate struct {
	min, max time.Duration
	limit    *rate.Limiter
	maxNames int
	now      func() time.Time

	mu    sync.Mutex
	names map[string]*attempts
}

type attempts struct {
	failures int
	next     time.Time
	lastErr  string
}

// NewGate returns a gate; perHour new certificates per hour (burst of the same size).
func NewGate(retryMin, retryMax time.Duration, perHour, maxNames int) *Gate {
	return &Gate{
		min: retryMin, max: retryMax, maxNames: maxNames, now: time.Now,
		limit: rate.NewLimiter(rate.Limit(float64(perHour)/3600), max(perHour, 1)),
		names: map[string]*attempts{},
	}
}

// Ready returns a *Refusal while name is backing off.
func (g *Gate) Ready(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a := g.names[name]; a != nil {
		if wait := a.next.Sub(g.now()); wait > 0 {
			return &Refusal{Reason: ReasonBackoff, Name: name, Retry: wait}
		}
	}
	return nil
}

// Start takes a token of the global rate for a new certificate for name and records the
// attempt, so the name waits at least RetryMin before the next one.
func (g *Gate) Start(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.names[name]
	if a == nil && len(g.names) >= g.maxNames {
		return &Refusal{Reason: ReasonTracked, Name: name}
	}
	if !g.limit.AllowN(g.now(), 1) {
		return &Refusal{Reason: ReasonRate, Name: name}
	}
	if a == nil {
		a = &attempts{}
		g.names[name] = a
	}
	a.next = g.now().Add(g.min)
	return nil
}

// Failed records a failed attempt and returns the back-off before the next one.
func (g *Gate) Failed(name string, err error) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.names[name]
	if a == nil {
		if len(g.names) >= g.maxNames {
			return g.max
		}
		a = &attempts{}
		g.names[name] = a
	}
	a.failures++
	wait := g.min
	for i := 1; i < a.failures && wait < g.max; i++ {
		wait *= 2
	}
	wait = min(wait, g.max)
	a.next = g.now().Add(wait)
	a.lastErr = err.Error()
	return wait
}

// Succeeded clears the name's failures (the RetryMin spacing stays).
func (g *Gate) Succeeded(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a := g.names[name]; a != nil {
		a.failures, a.lastErr = 0, ""
	}
}

// Forget drops what the gate knows of names for which keep is false (routes gone), and
// of names whose spacing has passed without failures.
func (g *Gate) Forget(keep func(string) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for name, a := range g.names {
		if !keep(name) || (a.failures == 0 && !now.Before(a.next)) {
			delete(g.names, name)
		}
	}
}

// Failing lists the names whose last attempt failed, with the error.
func (g *Gate) Failing() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]string{}
	for name, a := range g.names {
		if a.failures > 0 {
			out[name] = a.lastErr
		}
	}
	return out
}
