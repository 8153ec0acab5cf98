package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// The authenticated protocol (README.md here; the router's side is
// dataplane/router/internal/tunnel/auth.go): TLS 1.3 to the gateway with its key pinned,
// then a proof of the secret bound to this TLS session; the secret never crosses the wire.
const (
	authALPN          = "tfgateway-tunnel/1"
	authExporterLabel = "EXPORTER-tfgateway-tunnel-v1"
	authIDLabel       = "tfgateway tunnel id v1\x00"
	authProofLabel    = "tfgateway tunnel proof v1"
	authVersion       = 1
)

// errPinMismatch: the gateway's key is not the pinned one (a wrong pin, or a man in the
// middle); the client never sends anything derived from the secret to such a server.
var errPinMismatch = errors.New("the gateway's key does not match --pin")

// parsePin accepts "sha256/<base64>" (and curl's "sha256//<base64>").
func parsePin(pin string) ([]byte, error) {
	b64, ok := strings.CutPrefix(pin, "sha256/")
	if !ok {
		return nil, fmt.Errorf("--pin %q does not start with sha256/", pin)
	}
	// The base64 itself may start with "/" (one gateway key in 64): try it as it is first,
	// then as curl's "sha256//<base64>".
	sum, err := base64.StdEncoding.DecodeString(b64)
	if (err != nil || len(sum) != sha256.Size) && strings.HasPrefix(b64, "/") {
		sum, err = base64.StdEncoding.DecodeString(b64[1:])
	}
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("--pin %q is not sha256/ and the base64 of 32 bytes", pin)
	}
	return sum, nil
}

func pinOf(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256/" + base64.StdEncoding.EncodeToString(sum[:])
}

// refusedError is the gateway's refusal (status and reason from the router).
type refusedError struct {
	status byte
	reason string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("gateway refused the tunnel (status %d): %s", e.status, e.reason)
}

// authenticate runs TLS with the pinned key and the proof on conn, offering the ALPN
// protocols protos (preferred first); on success the returned connection carries the yamux
// session and says which protocol the gateway chose.
func authenticate(ctx context.Context, conn net.Conn, secret string, pin []byte, protos []string) (*tls.Conn, error) {
	tc := tls.Client(conn, &tls.Config{
		InsecureSkipVerify: true, // the pin is the whole verification
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errPinMismatch
			}
			spki := cs.PeerCertificates[0].RawSubjectPublicKeyInfo
			got := sha256.Sum256(spki)
			if subtle.ConstantTimeCompare(got[:], pin) != 1 {
				return fmt.Errorf("%w: it presented %s", errPinMismatch, pinOf(spki))
			}
			return nil
		},
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		ServerName: "tfgateway-tunnel",
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS to the gateway: %w", err)
	}
	cs := tc.ConnectionState()
	exp, err := cs.ExportKeyingMaterial(authExporterLabel, nil, 32)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256([]byte(authIDLabel + secret))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(authProofLabel))
	m.Write(exp)
	msg := append(append([]byte{authVersion}, id[:]...), m.Sum(nil)...)
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
	if hdr[0] != 0 {
		return nil, &refusedError{status: hdr[0], reason: string(reason)}
	}
	return tc, nil
}
