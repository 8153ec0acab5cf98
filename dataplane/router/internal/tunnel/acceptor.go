package tunnel

import (
	"io"
	"log/slog"
	"net"
	"time"

	yamux "github.com/libp2p/go-yamux/v5"
)

// Acceptor turns accepted client connections into registered sessions.
type Acceptor struct {
	Registry         *Registry
	HandshakeTimeout time.Duration
	MaxSecret        int
	Log              *slog.Logger
	// OnRegister and OnReject, if set, observe outcomes (metrics).
	OnRegister func(s *Session)
	OnReject   func(err error)
	// KeepAlive and WriteTimeout override go-yamux's 30 s and 10 s (tests only).
	KeepAlive    time.Duration
	WriteTimeout time.Duration
}

// MaxStreamWindow is how far go-yamux may grow a stream's receive window while its reader
// keeps up (it doubles the window when updates come faster than a few round trips), each
// growth reserved from the tunnel's memory budget. Streams start at the protocol's 256 KiB
// (MinStreamWindow): a larger initial grant would be memory no budget accounts for. At
// 256 KiB for good a bulk sender stalls on window updates long before the connection is
// full (benchmarks/router).
const MaxStreamWindow = 8 << 20

// maxFrame is the largest data frame the router sends: fewer headers and fewer hand-offs
// to the send loop than go-yamux's 64 KiB. Any yamux peer reads frames up to the window
// it granted (go-yamux v1.2.4 included), so this is within the protocol.
const maxFrame = 256 << 10

// MuxConfig is go-yamux v1.2.4's default as far as the wire is concerned (keepalive every
// 30 s, 10 s write timeout, backlog 256), except windows that grow and larger frames. A
// tunnel client opens only its handshake stream, so few incoming streams are accepted.
func MuxConfig(logOut io.Writer) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 256
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 30 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.MaxIncomingStreams = 16
	c.InitialStreamWindowSize = MinStreamWindow
	c.MaxStreamWindowSize = MaxStreamWindow
	c.MaxMessageSize = maxFrame
	c.LogOutput = logOut
	return c
}

// Handle runs the handshake on conn and registers the session; it returns once the client
// is registered or refused. The session then lives on its own goroutines.
func (a *Acceptor) Handle(conn net.Conn) {
	log := a.Log.With("remote", conn.RemoteAddr().String())
	cfg := MuxConfig(slogWriter{log})
	if a.KeepAlive > 0 {
		cfg.KeepAliveInterval = a.KeepAlive
	}
	if a.WriteTimeout > 0 {
		cfg.ConnectionWriteTimeout = a.WriteTimeout
	}
	mux, err := a.Registry.NewMux(conn, cfg)
	if err != nil {
		_ = conn.Close()
		a.reject(log, err)
		return
	}
	timeout := time.AfterFunc(a.HandshakeTimeout, func() { _ = mux.Close() })
	st, err := mux.AcceptStream()
	timeout.Stop()
	if err != nil {
		_ = mux.Close()
		a.reject(log, &HandshakeError{Reason: "no handshake stream: " + err.Error()})
		return
	}
	_ = st.SetReadDeadline(time.Now().Add(a.HandshakeTimeout))
	secret, err := ReadHandshake(st, a.MaxSecret)
	_ = st.Close()
	if err != nil {
		_ = mux.Close()
		a.reject(log, err)
		return
	}
	sess, err := a.Registry.Register(secret, mux)
	if err != nil {
		_ = mux.Close()
		a.reject(log, err)
		return
	}
	log.Info("tunnel registered", "tunnel", sess.Label)
	if a.OnRegister != nil {
		a.OnRegister(sess)
	}
	// trc never opens more streams; refuse any that come so they do not pile up.
	go func() {
		for {
			extra, err := mux.AcceptStream()
			if err != nil {
				return
			}
			_ = extra.Reset()
		}
	}()
	go func() {
		<-mux.CloseChan()
		log.Info("tunnel closed", "tunnel", sess.Label)
	}()
}

func (a *Acceptor) reject(log *slog.Logger, err error) {
	log.Warn("tunnel refused", "err", err)
	if a.OnReject != nil {
		a.OnReject(err)
	}
}

// slogWriter sends yamux's own log lines to slog at debug level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug("yamux", "msg", string(p))
	return len(p), nil
}
