package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	yamux "github.com/libp2p/go-yamux"
)

// Data connections (protocol 2, README.md "Data connections"; the router's side is
// dataplane/router/internal/tunnel/dataconn.go). With ALPN tfgateway-tunnel/2 every stream
// the gateway opens starts with one byte: streamInline (the public connection's bytes follow
// in the stream, as in protocol 1) or streamTicket and a 32-byte ticket, for which tftunnel
// dials the gateway's clients port again, sends dataConnMarker and the ticket, and splices
// that TCP connection with the local service: the bytes never cross the yamux session nor
// tftunnel's memory.
const (
	authALPNData   = "tfgateway-tunnel/2"
	dataConnMarker = 0x01
	ticketLen      = 32
	streamInline   = 0x00
	streamTicket   = 0x01
)

// serveData handles a stream of protocol 2: inline bytes are served as in protocol 1; a
// ticket is answered with a data connection. The stream is closed (FIN) once the ticket is
// sent, or reset if the data connection cannot be made, so the gateway closes the public
// connection at once instead of waiting for the ticket to expire.
func (t *tunnel) serveData(ctx context.Context, stream *yamux.Stream) {
	_ = stream.SetReadDeadline(time.Now().Add(sniffTimeout))
	var head [1 + ticketLen]byte
	if _, err := io.ReadFull(stream, head[:1]); err != nil {
		_ = stream.Reset()
		return
	}
	switch head[0] {
	case streamInline:
		t.serveStream(ctx, stream)
		return
	case streamTicket:
	default:
		t.log.Warn("unknown stream kind from the gateway", "kind", head[0])
		_ = stream.Reset()
		return
	}
	if _, err := io.ReadFull(stream, head[1:]); err != nil {
		_ = stream.Reset()
		return
	}
	head[0] = dataConnMarker
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	dc, err := t.dialer()(dctx, "tcp", t.dataAddr)
	cancel()
	if err == nil {
		_ = dc.SetWriteDeadline(time.Now().Add(dialTimeout))
		_, err = dc.Write(head[:])
		_ = dc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		if dc != nil {
			dc.Close()
		}
		t.log.Warn("data connection to the gateway failed", "addr", t.dataAddr, "err", err)
		_ = stream.Reset()
		return
	}
	_ = stream.Close()
	defer dc.Close()
	// ctx ends with the session: the data connection (and so its local one) goes with it.
	stop := context.AfterFunc(ctx, func() { _ = dc.Close() })
	defer stop()
	t.serveConn(ctx, dc)
}

// serveConn connects a data connection to the local service chosen by its first byte and
// splices them (io.Copy between two TCP connections uses splice(2)).
func (t *tunnel) serveConn(ctx context.Context, dc net.Conn) {
	br := bufio.NewReader(dc)
	_ = dc.SetReadDeadline(time.Now().Add(sniffTimeout))
	first, err := firstByte(br)
	if err != nil {
		t.log.Debug("forwarded connection sent nothing", "err", err)
		return
	}
	_ = dc.SetReadDeadline(time.Time{})
	local, err := t.dialLocal(ctx, first)
	if err != nil {
		return
	}
	defer local.Close()
	// What the peek buffered goes first, then the connection itself, spliced.
	buffered, _ := br.Peek(br.Buffered())
	if _, err := local.Write(buffered); err != nil {
		return
	}
	pipeConns(local, dc)
}

// dialLocal connects to --local-tls for TLS (first byte 0x16) and --local for anything else.
func (t *tunnel) dialLocal(ctx context.Context, first byte) (net.Conn, error) {
	target := t.local
	if first == tlsHandshake {
		target = t.localTLS
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	local, err := t.dialer()(dctx, "tcp", target)
	if err != nil {
		t.log.Warn("local service unreachable", "target", target, "err", err)
		return nil, err
	}
	return local, nil
}

// pipeConns copies both ways; a clean end is passed on as a half-close, an error closes
// both (the gateway then closes the public connection).
func pipeConns(a, b net.Conn) {
	abort := sync.OnceFunc(func() { _ = a.Close(); _ = b.Close() })
	done := make(chan struct{})
	one := func(dst, src net.Conn) {
		if _, err := io.Copy(dst, src); err != nil && !errors.Is(err, net.ErrClosed) {
			abort()
			return
		}
		if hc, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite()
		} else {
			abort()
		}
	}
	go func() { defer close(done); one(a, b) }()
	one(b, a)
	<-done
}

// negotiated says which protocol the gateway chose.
func negotiated(proto string) (dataConns bool, err error) {
	switch proto {
	case authALPNData:
		return true, nil
	case authALPN:
		return false, nil
	}
	return false, fmt.Errorf("the gateway chose protocol %q", proto)
}
