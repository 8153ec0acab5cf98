package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	yamux "github.com/libp2p/go-yamux"
)

const (
	// magic opens the handshake stream, as tcprouter's MagicNr.
	magic = 0x1111
	// maxSecretLen keeps magic, length and secret within one yamux frame (64 KiB).
	maxSecretLen = 65532
	dialTimeout  = 10 * time.Second
	// sniffTimeout bounds the wait for a forwarded connection's first byte; the router always
	// replays the bytes it peeked, so they arrive at once.
	sniffTimeout = 30 * time.Second
	tlsHandshake = 0x16
	// streamWindow is the receive window granted to each forwarded stream. yamux starts
	// every stream at 256 KiB and a larger window travels in the window update that
	// acknowledges the stream, which any yamux server (trs, tfrouter) adds to what it may
	// send. At 256 KiB the gateway stalls on window updates long before the connection is
	// full (benchmarks/router: with the bigger copy buffers here and in the router, about
	// 1.45x the upload throughput); the cost is at most this much buffered per stream when
	// the local service reads slowly.
	streamWindow = 1 << 20
	// maxFrame bounds the data frames tftunnel sends (go-yamux's default is 64 KiB): go-yamux
	// v1.2.4 waits for its send loop to write each frame, so four times fewer frames are
	// four times fewer of those hand-offs on an upload. A yamux peer accepts any frame
	// within the window it granted, and go-yamux never sends more than the window.
	maxFrame = 256 << 10
)

// handshake is the single buffer the server expects on the first stream.
func handshake(secret string) []byte {
	b := make([]byte, 4+len(secret))
	binary.BigEndian.PutUint16(b[0:2], magic)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(secret)))
	copy(b[4:], secret)
	return b
}

type tunnel struct {
	remote, secret  string
	local, localTLS string
	backoff         time.Duration
	pin             []byte // authenticated protocol when set
	// dataInTLS keeps every connection inside the TLS session (offers protocol 1 only);
	// otherwise protocol 2 is offered and, if the gateway takes it, connections come on
	// data connections dialled to dataAddr (the address the session is connected to).
	dataInTLS bool
	dataAddr  string
	log       *slog.Logger
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
}

// run keeps the tunnel up until ctx ends, reconnecting after backoff like trc.
func (t *tunnel) run(ctx context.Context) {
	for {
		err := t.session(ctx)
		if ctx.Err() != nil {
			return
		}
		t.log.Warn("tunnel down, reconnecting", "err", err, "backoff", t.backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(t.backoff):
		}
	}
}

func (t *tunnel) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.dial != nil {
		return t.dial
	}
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return d.DialContext
}

// session runs one connection to the gateway until it fails or ctx ends.
func (t *tunnel) session(ctx context.Context) error {
	conn, err := t.dialer()(ctx, "tcp", t.remote)
	if err != nil {
		return fmt.Errorf("dial gateway: %w", err)
	}
	dataConns := false
	if t.pin != nil {
		protos := []string{authALPNData, authALPN}
		if t.dataInTLS {
			protos = []string{authALPN}
		}
		t.dataAddr = conn.RemoteAddr().String()
		hctx, cancel := context.WithTimeout(ctx, dialTimeout)
		_ = conn.SetDeadline(time.Now().Add(dialTimeout))
		authed, err := authenticate(hctx, conn, t.secret, t.pin, protos)
		cancel()
		if err == nil {
			dataConns, err = negotiated(authed.ConnectionState().NegotiatedProtocol)
		}
		if err != nil {
			conn.Close()
			return err
		}
		_ = conn.SetDeadline(time.Time{})
		conn = authed
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.MaxStreamWindowSize = streamWindow
	cfg.MaxMessageSize = maxFrame
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		return fmt.Errorf("start multiplexer: %w", err)
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()

	if t.pin == nil {
		hs, err := sess.OpenStream()
		if err != nil {
			return fmt.Errorf("open handshake stream: %w", err)
		}
		if _, err := hs.Write(handshake(t.secret)); err != nil {
			return fmt.Errorf("send handshake: %w", err)
		}
		hs.Close()
		// trc's protocol has no answer: a refused secret shows as the gateway closing.
		t.log.Info("handshake sent")
	} else {
		t.log.Info("tunnel registered", "protocol", "authenticated", "data_connections", dataConns)
	}

	var streams sync.WaitGroup
	defer streams.Wait()
	// Data connections end with the session, as its streams do (and before the wait above:
	// a dead session must not wait for its data connections' TCP timeouts to reconnect).
	sessCtx, endSession := context.WithCancel(ctx)
	defer endSession()
	for {
		stream, err := sess.AcceptStream()
		if err != nil {
			if sess.IsClosed() && ctx.Err() == nil {
				return errors.New("session closed by the gateway or keepalive failure")
			}
			return err
		}
		streams.Add(1)
		streamsServed.add()
		go func() {
			defer streams.Done()
			defer streamsServed.done()
			if dataConns {
				t.serveData(sessCtx, stream)
			} else {
				t.serveStream(ctx, stream)
			}
		}()
	}
}

// serveStream connects one forwarded connection to the local service: TLS to --local-tls,
// anything else to --local, as trc decides by the first byte.
func (t *tunnel) serveStream(ctx context.Context, stream *yamux.Stream) {
	defer stream.Close()
	br := bufio.NewReader(stream)
	_ = stream.SetReadDeadline(time.Now().Add(sniffTimeout))
	first, err := firstByte(br)
	if err != nil {
		t.log.Debug("forwarded connection sent nothing", "err", err)
		_ = stream.Reset()
		return
	}
	_ = stream.SetReadDeadline(time.Time{})
	local, err := t.dialLocal(ctx, first)
	if err != nil {
		_ = stream.Reset()
		return
	}
	defer local.Close()
	splice(local, stream, br)
}

// proxyV2Signature starts a PROXY protocol v2 header, which the router sends first on a
// route that asks for it; the header's length is in bytes 14-15.
var proxyV2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// firstByte is the first byte of the client's own data: after a PROXY protocol v2 header
// if there is one (the header itself is passed on to the local service with the rest).
func firstByte(br *bufio.Reader) (byte, error) {
	head, err := br.Peek(1)
	if err != nil {
		return 0, err
	}
	if head[0] != proxyV2Signature[0] {
		return head[0], nil
	}
	head, err = br.Peek(16)
	if err != nil || !bytes.Equal(head[:12], proxyV2Signature) {
		return head[0], nil // not a PROXY header: plain data
	}
	n := 16 + int(binary.BigEndian.Uint16(head[14:16]))
	if n >= br.Size() {
		return 0, fmt.Errorf("PROXY header of %d bytes", n)
	}
	head, err = br.Peek(n + 1)
	if err != nil {
		return 0, err
	}
	return head[n], nil
}

// splice copies both ways. Each direction's clean end is passed on as a half-close (TCP
// CloseWrite, yamux FIN); an error in either direction (the gateway reset the stream because
// its public client went away, the local service aborted) resets the stream and closes the
// local connection, so neither end keeps sending or buffering for a dead connection.
func splice(local net.Conn, stream *yamux.Stream, fromStream io.Reader) {
	abort := sync.OnceFunc(func() {
		_ = stream.Reset()
		_ = local.Close()
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := copyBuffered(local, fromStream); err != nil {
			abort()
			return
		}
		if tc, ok := local.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
	}()
	if _, err := copyBuffered(stream, local); err != nil {
		abort()
	} else {
		_ = stream.Close() // FIN: yamux's Close is a half-close
	}
	<-done
}
