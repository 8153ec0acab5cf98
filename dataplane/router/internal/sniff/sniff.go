// Package sniff reads just enough of a new connection to route it: the Host header of an
// HTTP request or the SNI of a TLS ClientHello. Reads are bounded in size; the caller sets
// the deadline. The bytes read are returned so they can be replayed to the backend.
package sniff

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
)

// Errors; each closes the connection with a clear log line.
var (
	ErrTooLarge   = errors.New("request head exceeds the size limit")
	ErrNoHost     = errors.New("no Host header")
	ErrBadRequest = errors.New("malformed request head")
	ErrNotTLS     = errors.New("not a TLS handshake")
	ErrBadHello   = errors.New("malformed TLS ClientHello")
)

// HTTPHost reads an HTTP/1.x request head (up to limit bytes) from r and returns the
// lowercased Host without port, and every byte read so far (head and any body bytes).
func HTTPHost(r io.Reader, limit int) (host string, buf []byte, err error) {
	buf = make([]byte, 0, min(4096, limit))
	for {
		if end := headEnd(buf); end >= 0 {
			h, err := hostFromHead(buf[:end])
			return h, buf, err
		}
		if len(buf) >= limit {
			return "", buf, ErrTooLarge
		}
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(2*cap(buf), limit))
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if end := headEnd(buf); end >= 0 {
				h, herr := hostFromHead(buf[:end])
				return h, buf, herr
			}
			return "", buf, err
		}
	}
}

// headEnd returns the length of the head including the blank line, or -1.
func headEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return -1
}

func hostFromHead(head []byte) (string, error) {
	lines := strings.Split(string(head), "\n")
	if len(lines) == 0 || !strings.Contains(lines[0], " ") {
		return "", ErrBadRequest
	}
	for _, line := range lines[1:] {
		line = strings.TrimRight(line, "\r")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "host") {
			continue
		}
		h, err := NormaliseHost(strings.TrimSpace(value))
		if err != nil {
			return "", err
		}
		return h, nil
	}
	return "", ErrNoHost
}

// NormaliseHost lowercases a Host value and strips the port; "[::1]:80" and "[::1]" both
// give "::1".
func NormaliseHost(v string) (string, error) {
	if v == "" {
		return "", ErrNoHost
	}
	if strings.HasPrefix(v, "[") {
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return "", ErrBadRequest
		}
		rest := v[end+1:]
		if rest != "" && !isPort(strings.TrimPrefix(rest, ":")) || (rest != "" && rest[0] != ':') {
			return "", ErrBadRequest
		}
		return strings.ToLower(v[1:end]), nil
	}
	if strings.Count(v, ":") == 1 {
		h, p, _ := strings.Cut(v, ":")
		if !isPort(p) || h == "" {
			return "", ErrBadRequest
		}
		v = h
	} else if strings.Count(v, ":") > 1 {
		// a bare IPv6 literal without brackets is not a valid Host; take it as is
		if _, err := netip.ParseAddr(v); err != nil {
			return "", ErrBadRequest
		}
	}
	return strings.ToLower(strings.TrimSuffix(v, ".")), nil
}

func isPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
