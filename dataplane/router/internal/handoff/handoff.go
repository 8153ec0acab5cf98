// Package handoff passes a routed connection to a server that owns it from then on (the
// TLS terminator's HTTP proxy, the router's own port-80 answers) while the router's
// connection handler waits for the end: the router keeps its accounting (active
// connections, graceful shutdown) and the server keeps its own loop.
package handoff

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Conn replays the bytes the router peeked before reading on, counts what crosses it and
// reports its end: Done is closed by the first Close.
type Conn struct {
	net.Conn
	r    io.Reader
	in   atomic.Int64
	out  atomic.Int64
	once sync.Once
	done chan struct{}
	// Value is whatever the owner wants to find again from the conn (route, backend).
	Value any
}

// NewConn wraps c; peeked is read before c.
func NewConn(c net.Conn, peeked []byte, value any) *Conn {
	var r io.Reader = c
	if len(peeked) > 0 {
		r = io.MultiReader(bytes.NewReader(peeked), c)
	}
	return &Conn{Conn: c, r: r, done: make(chan struct{}), Value: value}
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// Close closes the connection and signals Done.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// CloseWrite half-closes a TCP connection (a FIN after the last byte).
func (c *Conn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// Done is closed once the connection was closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Bytes returns what was read (peeked bytes included) and written so far.
func (c *Conn) Bytes() (in, out int64) { return c.in.Load(), c.out.Load() }

// Listener hands connections to a server's accept loop (http.Server.Serve).
type Listener struct {
	addr   net.Addr
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

// NewListener returns a listener whose Addr is addr.
func NewListener(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Hand gives c to the accept loop; false if the listener is closed (c is not taken).
func (l *Listener) Hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

// Accept waits for the next handed connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and Hand.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is the address given to NewListener.
func (l *Listener) Addr() net.Addr { return l.addr }
