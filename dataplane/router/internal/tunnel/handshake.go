// Package tunnel accepts trc reverse-tunnel clients (tcprouter v0.1.0 wire protocol: yamux
// version 0 framing, then a first stream carrying 0x1111, a u16 length and the secret) and
// keeps one live session per secret.
package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic is tcprouter's handshake magic number.
const Magic = 0x1111

// HandshakeError says why a client was refused.
type HandshakeError struct{ Reason string }

func (e *HandshakeError) Error() string { return "tunnel handshake: " + e.Reason }

// ErrSecretTooLong is returned when a client announces a secret over the limit.
var ErrSecretTooLong = errors.New("secret too long")

// ReadHandshake reads magic, length and secret with full reads (a yamux stream may deliver
// them in pieces), checking the magic before the length and the length before allocating.
func ReadHandshake(r io.Reader, maxSecret int) (string, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", &HandshakeError{Reason: fmt.Sprintf("reading header: %v", err)}
	}
	if m := binary.BigEndian.Uint16(hdr[:2]); m != Magic {
		return "", &HandshakeError{Reason: fmt.Sprintf("bad magic %#04x", m)}
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	if n == 0 {
		return "", &HandshakeError{Reason: "empty secret"}
	}
	if n > maxSecret {
		return "", &HandshakeError{Reason: fmt.Sprintf("%v: %d bytes > %d", ErrSecretTooLong, n, maxSecret)}
	}
	secret := make([]byte, n)
	if _, err := io.ReadFull(r, secret); err != nil {
		return "", &HandshakeError{Reason: fmt.Sprintf("reading secret: %v", err)}
	}
	return string(secret), nil
}

// WriteHandshake writes the client side in one buffer, as trc does (used by tests).
func WriteHandshake(w io.Writer, secret string) error {
	if len(secret) > 0xffff {
		return ErrSecretTooLong
	}
	b := make([]byte, 4+len(secret))
	binary.BigEndian.PutUint16(b, Magic)
	binary.BigEndian.PutUint16(b[2:], uint16(len(secret)))
	copy(b[4:], secret)
	_, err := w.Write(b)
	return err
}
