package tunnel

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"

	"tfgateway.dev/dataplane/router/internal/routes"
)

// The authenticated tunnel protocol (tftunnel --pin; docs: dataplane/tftunnel/README.md):
//
//  1. TLS 1.3 to the tunnel port (the router tells it from trc by the first byte, 0x16),
//     ALPN "tfgateway-tunnel/1"; the client accepts only the pinned server key.
//  2. client → server, 65 bytes: version (1) | id (32) | proof (32), where
//     id = SHA-256("tfgateway tunnel id v1\x00" || secret) names the secret without revealing
//     it, and proof = HMAC-SHA256(secret, "tfgateway tunnel proof v1" || exporter) with
//     exporter = TLS ExportKeyingMaterial(ExporterLabel, nil, 32) (RFC 5705/8446 §7.5):
//     unique to this TLS session and contributed to by the server's random and key share,
//     so it is the server's challenge and a proof is worth nothing on any other connection.
//  3. server → client: status (1) | reason length (1) | reason (ASCII, for the client's log).
//  4. status 0: the connection carries a yamux session, the router opening one stream per
//     public connection, as in the legacy protocol. With ALPN "tfgateway-tunnel/2" (offered
//     by the client first, chosen by a router with data connections on) each stream starts
//     with a byte saying whether the bytes follow inline or on a data connection
//     (dataconn.go).
const (
	ALPN          = "tfgateway-tunnel/1"
	ExporterLabel = "EXPORTER-tfgateway-tunnel-v1"
	proofLabel    = "tfgateway tunnel proof v1"
	authVersion   = 1
	authMsgLen    = 1 + 32 + 32
)

// Status codes of the server's answer.
const (
	StatusOK          byte = 0
	StatusNoRoute     byte = 1 // no live route references the secret
	StatusBadProof    byte = 2
	StatusUnavailable byte = 3 // limits (too many tunnels)
	StatusBadRequest  byte = 4
)

// Proof is the client's proof of secret for a TLS session's exporter value.
func Proof(secret string, exporter []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(proofLabel))
	m.Write(exporter)
	return m.Sum(nil)
}

// RefusedError is the server's refusal as the client sees it.
type RefusedError struct {
	Status byte
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("gateway refused the tunnel (status %d): %s", e.Status, e.Reason)
}

// ClientHandshake runs the client side on conn: TLS with the pinned key, then the proof.
// On success the returned connection carries the yamux session (the client side). This is
// the reference implementation tftunnel's copy follows (tests use it directly).
func ClientHandshake(ctx context.Context, conn net.Conn, secret string, pin []byte, protos ...string) (*tls.Conn, error) {
	if len(protos) == 0 {
		protos = []string{ALPN}
	}
	tc := tls.Client(conn, &tls.Config{
		InsecureSkipVerify: true, // the pin below is the whole verification
		VerifyConnection:   VerifyPin(pin),
		MinVersion:         tls.VersionTLS13,
		NextProtos:         protos,
		ServerName:         "tfgateway-tunnel",
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS to the gateway: %w", err)
	}
	cs := tc.ConnectionState()
	exp, err := cs.ExportKeyingMaterial(ExporterLabel, nil, 32)
	if err != nil {
		return nil, err
	}
	id := routes.TunnelIDOf(secret)
	msg := make([]byte, 0, authMsgLen)
	msg = append(msg, authVersion)
	msg = append(msg, id[:]...)
	msg = append(msg, Proof(secret, exp)...)
	if _, err := tc.Write(msg); err != nil {
		return nil, fmt.Errorf("sending the proof: %w", err)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(tc, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading the gateway's answer: %w", err)
	}
	reason := make([]byte, hdr[1])
	if _, err := io.ReadFull(tc, reason); err != nil {
		return nil, fmt.Errorf("reading the gateway's answer: %w", err)
	}
	if hdr[0] != StatusOK {
		return nil, &RefusedError{Status: hdr[0], Reason: string(reason)}
	}
	return tc, nil
}

// authRefusal carries the status and reason sent to the client and the metric reason.
type authRefusal struct {
	status byte
	why    string // sent to the client
	reason string // metric label
}

func (e *authRefusal) Error() string { return e.why }

// serverAuth runs steps 1-3 on the server side. lookup finds the secret of an id among the
// live routes; protos are the ALPN values accepted, preferred first (Go's TLS server picks
// by its own preference). It returns the TLS connection and the proven secret.
func serverAuth(ctx context.Context, conn net.Conn, id *Identity, lookup func(routes.TunnelID) (string, bool), protos []string) (*tls.Conn, string, error) {
	tc := tls.Server(conn, &tls.Config{
		Certificates: []tls.Certificate{id.Cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   protos,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, "", &authRefusal{reason: ReasonTLS, why: err.Error()}
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != ALPN && cs.NegotiatedProtocol != ALPNData {
		return nil, "", refuse(tc, &authRefusal{StatusBadRequest, "ALPN " + ALPN + " required", ReasonBadHandshake})
	}
	var msg [authMsgLen]byte
	if _, err := io.ReadFull(tc, msg[:]); err != nil {
		return nil, "", &authRefusal{reason: ReasonBadHandshake, why: "reading the proof: " + err.Error()}
	}
	if msg[0] != authVersion {
		return nil, "", refuse(tc, &authRefusal{StatusBadRequest, fmt.Sprintf("protocol version %d not supported (1 is)", msg[0]), ReasonBadHandshake})
	}
	var tid routes.TunnelID
	copy(tid[:], msg[1:33])
	secret, ok := lookup(tid)
	if !ok {
		return nil, "", refuse(tc, &authRefusal{StatusNoRoute, "no reverse proxy on this gateway uses this secret (yet)", ReasonUnknownSecret})
	}
	exp, err := cs.ExportKeyingMaterial(ExporterLabel, nil, 32)
	if err != nil {
		return nil, "", refuse(tc, &authRefusal{StatusBadRequest, err.Error(), ReasonOther})
	}
	if !hmac.Equal(msg[33:], Proof(secret, exp)) {
		return nil, "", refuse(tc, &authRefusal{StatusBadProof, "wrong proof of the secret", ReasonBadProof})
	}
	return tc, secret, nil
}

// refuse tells the client why (best effort) and returns e.
func refuse(tc *tls.Conn, e *authRefusal) error {
	_ = answer(tc, e.status, e.why)
	return e
}

func answer(w io.Writer, status byte, why string) error {
	if len(why) > 255 {
		why = why[:255]
	}
	b := append([]byte{status, byte(len(why))}, why...)
	_, err := w.Write(b)
	return err
}
