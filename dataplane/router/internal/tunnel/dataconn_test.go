package tunnel

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// closeCounter is a connection that only counts its Close calls.
type closeCounter struct {
	net.Conn
	closed *atomic.Int64
}

func (c closeCounter) Close() error { c.closed.Add(1); return nil }

func testSession(t *testing.T) *Session {
	t.Helper()
	mux, _ := pair(t, false)
	return &Session{Secret: "u:t", Label: "u", mux: mux}
}

// pipe sessions have no IP address: their source key is the zero Addr.
var pipeSource netip.Addr

// A data connection that arrives before the router starts waiting (the client is fast) is
// delivered, not lost.
func TestTicketClaimedBeforeWait(t *testing.T) {
	tk := &Tickets{TTL: time.Second}
	sess := testSession(t)
	w, err := tk.Issue(sess)
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Int64
	dc := &DataConn{Conn: closeCounter{closed: &closed}, Release: func() {}}
	if !tk.Claim(w.Ticket, pipeSource, dc) {
		t.Fatal("claim refused")
	}
	got, err := tk.Wait(context.Background(), w, nil)
	if err != nil || got != dc {
		t.Fatalf("wait: %v, %v", got, err)
	}
	if tk.Claim(w.Ticket, pipeSource, dc) {
		t.Fatal("a ticket was used twice")
	}
	if tk.Pending() != 0 {
		t.Fatalf("%d pending", tk.Pending())
	}
}

// Tickets: bounded per tunnel, only from the tunnel client's source, gone when they expire
// or the tunnel ends.
func TestTicketBoundsSourceAndExpiry(t *testing.T) {
	tk := &Tickets{TTL: 50 * time.Millisecond, PerTunnel: 2}
	sess, other := testSession(t), testSession(t)
	w1, _ := tk.Issue(sess)
	w2, _ := tk.Issue(sess)
	if _, err := tk.Issue(sess); !errors.Is(err, ErrTicketsFull) {
		t.Fatalf("third ticket: %v", err)
	}
	if _, err := tk.Issue(other); err != nil {
		t.Fatalf("another tunnel's ticket: %v", err)
	}
	var closed atomic.Int64
	dc := &DataConn{Conn: closeCounter{closed: &closed}, Release: func() {}}
	if tk.Claim(w1.Ticket, netip.MustParseAddr("192.0.2.1"), dc) {
		t.Fatal("a ticket accepted from another source")
	}
	if _, err := tk.Wait(context.Background(), w1, nil); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("wait: %v", err)
	}
	_ = sess.mux.Close()
	if _, err := tk.Wait(context.Background(), w2, nil); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("wait on a dead tunnel: %v", err)
	}
	if tk.Pending() != 1 { // other's
		t.Fatalf("%d pending", tk.Pending())
	}
	if closed.Load() != 0 {
		t.Fatal("an unclaimed connection was closed")
	}
}

// Claims racing with expiry: every data connection is delivered or closed, none is lost.
func TestTicketClaimRacesExpiry(t *testing.T) {
	tk := &Tickets{TTL: time.Millisecond, PerTunnel: 1000}
	sess := testSession(t)
	var closed, delivered, released, claims atomic.Int64
	var wg sync.WaitGroup
	for range 500 {
		w, err := tk.Issue(sess)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		dc := &DataConn{Conn: closeCounter{closed: &closed}, Release: func() { released.Add(1) }}
		go func() {
			defer wg.Done()
			if tk.Claim(w.Ticket, pipeSource, dc) {
				claims.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			got, err := tk.Wait(context.Background(), w, nil)
			if err == nil {
				delivered.Add(1)
				got.Close()
			}
		}()
	}
	wg.Wait()
	if tk.Pending() != 0 {
		t.Fatalf("%d pending", tk.Pending())
	}
	// each claimed connection was closed and released exactly once, by its waiter or by
	// Wait itself when the ticket expired meanwhile
	t.Logf("claimed %d, delivered %d", claims.Load(), delivered.Load())
	if closed.Load() != claims.Load() || released.Load() != claims.Load() {
		t.Fatalf("claimed %d, closed %d, released %d", claims.Load(), closed.Load(), released.Load())
	}
}

// A pin whose base64 starts with "/" (one key in 64) parses, as does curl's "sha256//" form.
func TestParsePinWithLeadingSlash(t *testing.T) {
	sum := make([]byte, 32)
	sum[0] = 0xfc // base64 "/..."
	b64 := base64.StdEncoding.EncodeToString(sum)
	for _, pin := range []string{"sha256/" + b64, "sha256//" + b64} {
		got, err := ParsePin(pin)
		if err != nil || !bytes.Equal(got, sum) {
			t.Fatalf("%s: %x, %v", pin, got, err)
		}
	}
	if _, err := ParsePin("sha256/" + b64[1:]); err == nil {
		t.Fatal("a truncated pin was accepted")
	}
}
