package sniff

import (
	"encoding/binary"
	"io"
	"strings"
)

const (
	recordHeaderLen      = 5
	recordTypeHandshake  = 0x16
	handshakeClientHello = 1
	extServerName        = 0
)

// TLSServerName reads TLS records from r until the whole ClientHello handshake message is
// in (it may span several records), at most limit bytes, and returns its SNI lowercased
// ("" when the hello carries none) together with every byte read.
func TLSServerName(r io.Reader, limit int) (string, []byte, error) {
	var raw []byte // records as read, replayed to the backend
	var msg []byte // reassembled handshake payload
	for {
		var hdr [recordHeaderLen]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return "", append(raw, hdr[:]...), err
		}
		raw = append(raw, hdr[:]...)
		if hdr[0] != recordTypeHandshake || hdr[1] != 3 {
			return "", raw, ErrNotTLS
		}
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		if n == 0 || n > 1<<14+2048 {
			return "", raw, ErrBadHello
		}
		if len(raw)+n > limit {
			return "", raw, ErrTooLarge
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if _, err := io.ReadFull(r, raw[start:]); err != nil {
			return "", raw, err
		}
		msg = append(msg, raw[start:]...)
		if len(msg) < 4 {
			continue
		}
		if msg[0] != handshakeClientHello {
			return "", raw, ErrBadHello
		}
		need := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		if need > limit {
			return "", raw, ErrTooLarge
		}
		if len(msg) >= need {
			name, err := serverName(msg[4:need])
			return name, raw, err
		}
	}
}

// reader over a byte slice with bounds checks that fail closed.
type cursor struct {
	b  []byte
	ok bool
}

func (c *cursor) take(n int) []byte {
	if !c.ok || n < 0 || n > len(c.b) {
		c.ok = false
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u8() int {
	v := c.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (c *cursor) u16() int {
	v := c.take(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

// serverName parses a ClientHello body (RFC 8446 §4.1.2) for the server_name extension.
func serverName(body []byte) (string, error) {
	c := &cursor{b: body, ok: true}
	c.take(2)       // legacy_version
	c.take(32)      // random
	c.take(c.u8())  // legacy_session_id
	c.take(c.u16()) // cipher_suites
	c.take(c.u8())  // legacy_compression_methods
	if !c.ok {
		return "", ErrBadHello
	}
	if len(c.b) == 0 {
		return "", nil // no extensions
	}
	exts := &cursor{b: c.take(c.u16()), ok: c.ok}
	if !exts.ok {
		return "", ErrBadHello
	}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.take(exts.u16())
		if !exts.ok {
			return "", ErrBadHello
		}
		if typ != extServerName {
			continue
		}
		list := &cursor{b: data, ok: true}
		names := &cursor{b: list.take(list.u16()), ok: true}
		if !list.ok {
			return "", ErrBadHello
		}
		for len(names.b) > 0 {
			kind := names.u8()
			name := names.take(names.u16())
			if !names.ok {
				return "", ErrBadHello
			}
			if kind == 0 {
				return strings.ToLower(strings.TrimSuffix(string(name), ".")), nil
			}
		}
		return "", nil
	}
	return "", nil
}
