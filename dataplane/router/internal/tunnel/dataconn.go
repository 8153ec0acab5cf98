package tunnel

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Data connections (ALPN "tfgateway-tunnel/2", the authenticated protocol only; docs:
// dataplane/tftunnel/README.md "Data connections"). The yamux session stays the control
// channel; each public connection's bytes go over a TCP connection of their own, which both
// ends splice:
//
//  1. The router opens a stream and writes StreamTicket and a 32-byte random ticket (or
//     StreamInline: the connection's bytes follow in the stream, as in protocol 1).
//  2. tftunnel dials the clients port again and sends DataConnMarker and the ticket; the
//     router matches it to the waiting public connection (single use, this tunnel's
//     client's source address only, for TicketTTL), writes the bytes it peeked and splices.
//  3. tftunnel closes the stream once it has sent the ticket; a client that cannot dial
//     resets it and the router closes the public connection at once.
const (
	// ALPNData is protocol 2: protocol 1 plus data connections.
	ALPNData = "tfgateway-tunnel/2"
	// DataConnMarker is a data connection's first byte: neither a TLS record (0x16) nor
	// yamux version 0.
	DataConnMarker byte = 0x01
	// TicketLen is the size of a ticket.
	TicketLen = 32
	// StreamInline and StreamTicket are the first byte of every stream in protocol 2.
	StreamInline byte = 0x00
	StreamTicket byte = 0x01
	// TicketTTL is how long a ticket waits for its data connection.
	TicketTTL = 5 * time.Second
	// DefaultPendingTickets bounds the tickets one tunnel has waiting; beyond it a public
	// connection goes inline in its stream.
	DefaultPendingTickets = 256
)

// Ticket names one waiting public connection.
type Ticket [TicketLen]byte

// Errors of a ticket's wait.
var (
	ErrTicketsFull   = errors.New("too many tickets waiting on this tunnel")
	ErrTicketExpired = errors.New("the data connection did not come in time")
)

// DataConn is a matched data connection: the accepted TCP connection (spliced as it is) and
// a release to call once it is closed.
type DataConn struct {
	Conn    net.Conn
	Release func()
}

// Close closes the connection and releases its place once.
func (d *DataConn) Close() {
	_ = d.Conn.Close()
	d.Release()
}

// Tickets holds the tickets waiting for their data connection, over all tunnels.
type Tickets struct {
	// PerTunnel bounds the waiting tickets of one tunnel (DefaultPendingTickets if 0).
	PerTunnel int
	// TTL is how long a ticket waits (TicketTTL if 0).
	TTL time.Duration

	mu      sync.Mutex
	waiting map[Ticket]*Waiter
	pending map[*Session]int
}

// Waiter is an issued ticket, waiting for its data connection.
type Waiter struct {
	Ticket Ticket
	sess   *Session
	got    chan *DataConn // capacity 1, filled under Tickets.mu
}

func (t *Tickets) init() {
	if t.waiting == nil {
		t.waiting = map[Ticket]*Waiter{}
		t.pending = map[*Session]int{}
	}
}

// Pending is the number of tickets waiting.
func (t *Tickets) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.waiting)
}

// Issue creates a ticket for a public connection on sess; Wait must follow.
func (t *Tickets) Issue(sess *Session) (*Waiter, error) {
	w := &Waiter{sess: sess, got: make(chan *DataConn, 1)}
	if _, err := rand.Read(w.Ticket[:]); err != nil {
		return nil, err
	}
	limit := t.PerTunnel
	if limit <= 0 {
		limit = DefaultPendingTickets
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.init()
	if t.pending[sess] >= limit {
		return nil, ErrTicketsFull
	}
	t.waiting[w.Ticket] = w
	t.pending[sess]++
	return w, nil
}

// Wait waits for tk's data connection until the ticket expires, ctx ends, abort is closed or
// the tunnel dies; the ticket is gone when it returns, used or not.
func (t *Tickets) Wait(ctx context.Context, w *Waiter, abort <-chan struct{}) (*DataConn, error) {
	tk := w.Ticket
	ttl := t.TTL
	if ttl <= 0 {
		ttl = TicketTTL
	}
	timer := time.NewTimer(ttl)
	defer timer.Stop()
	var err error
	select {
	case dc := <-w.got:
		return dc, nil
	case <-timer.C:
		err = ErrTicketExpired
	case <-ctx.Done():
		err = ctx.Err()
	case <-abort:
		err = ErrNoTunnel
	case <-w.sess.mux.CloseChan():
		err = ErrNoTunnel
	}
	t.mu.Lock()
	if t.waiting[tk] == w {
		t.forget(tk, w)
		t.mu.Unlock()
		return nil, err
	}
	t.mu.Unlock()
	// Claimed meanwhile: the connection is in the channel already (sent under the lock).
	(<-w.got).Close()
	return nil, err
}

func (t *Tickets) forget(tk Ticket, w *Waiter) {
	delete(t.waiting, tk)
	if t.pending[w.sess]--; t.pending[w.sess] <= 0 {
		delete(t.pending, w.sess)
	}
}

// Claim hands dc to the public connection waiting for tk, if the ticket is waiting and the
// connection comes from the source address of the ticket's tunnel client. A ticket
// presented from another source stays waiting (so nobody can burn someone else's ticket).
func (t *Tickets) Claim(tk Ticket, src netip.Addr, dc *DataConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.waiting[tk]
	if w == nil || w.sess.mux.IsClosed() || SourceKey(w.sess.RemoteAddr()) != src {
		return false
	}
	t.forget(tk, w)
	w.got <- dc
	return true
}

// ReadTicket reads a data connection's ticket (after its marker byte).
func ReadTicket(r io.Reader) (Ticket, error) {
	var tk Ticket
	_, err := io.ReadFull(r, tk[:])
	return tk, err
}
