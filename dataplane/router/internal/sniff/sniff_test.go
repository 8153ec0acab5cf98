package sniff

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestHTTPHost(t *testing.T) {
	cases := []struct {
		name, req, host string
		err             error
	}{
		{"plain", "GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n", "www.example.com", nil},
		{"case-insensitive name, port, case", "GET / HTTP/1.1\r\nuser-agent: x\r\nhOsT: WWW.Example.COM:8080\r\n\r\n", "www.example.com", nil},
		{"no space after colon", "GET / HTTP/1.1\r\nHost:abc.example\r\n\r\n", "abc.example", nil},
		{"ipv6 literal with port", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", "2001:db8::1", nil},
		{"ipv6 literal", "GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", "::1", nil},
		{"bare LF", "GET / HTTP/1.0\nHost: a.b\n\n", "a.b", nil},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: a.b.\r\n\r\n", "a.b", nil},
		{"missing host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", "", ErrNoHost},
		{"bad port", "GET / HTTP/1.1\r\nHost: a.b:x\r\n\r\n", "", ErrBadRequest},
		{"no request line", "\r\n\r\n", "", ErrBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// one byte per Read: the parser must not depend on how the bytes arrive
			host, buf, err := HTTPHost(iotest.OneByteReader(strings.NewReader(c.req)), 16384)
			if !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if host != c.host {
				t.Fatalf("host = %q, want %q", host, c.host)
			}
			if err == nil && string(buf) != c.req {
				t.Fatalf("replayed %q, want %q", buf, c.req)
			}
		})
	}
}

func TestHTTPHostKeepsBodyBytes(t *testing.T) {
	req := "POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 5\r\n\r\nhello"
	_, buf, err := HTTPHost(strings.NewReader(req), 16384)
	if err != nil || string(buf) != req {
		t.Fatalf("got %q, %v; want every byte read replayed", buf, err)
	}
}

func TestHTTPHostSizeLimit(t *testing.T) {
	req := "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 20000) + "\r\nHost: a.b\r\n\r\n"
	_, buf, err := HTTPHost(strings.NewReader(req), 1024)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if len(buf) > 1024 {
		t.Fatalf("read %d bytes past the 1024 limit", len(buf))
	}
}

func TestHTTPHostDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _, _ = b.Write([]byte("GET / HTTP/1.1\r\nHo")) }()
	_ = a.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	done := make(chan error, 1)
	go func() { _, _, err := HTTPHost(a, 16384); done <- err }()
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("HTTPHost ignored the read deadline")
	}
}

// clientHello captures the bytes a real crypto/tls client sends first.
func clientHello(t *testing.T, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true}) //nolint:gosec // never completes
		_ = c.Handshake()
	}()
	defer a.Close()
	defer b.Close()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(b, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr[:], body...)
}

// splitRecords re-frames one handshake record into records of at most n payload bytes.
func splitRecords(rec []byte, n int) []byte {
	payload := rec[5:]
	var out []byte
	for len(payload) > 0 {
		k := min(n, len(payload))
		h := []byte{rec[0], rec[1], rec[2], 0, 0}
		binary.BigEndian.PutUint16(h[3:], uint16(k))
		out = append(append(out, h...), payload[:k]...)
		payload = payload[k:]
	}
	return out
}

func TestTLSServerName(t *testing.T) {
	hello := clientHello(t, "WWW.Example.com")
	for name, in := range map[string][]byte{
		"one record":     hello,
		"many records":   splitRecords(hello, 50),
		"tiny records":   splitRecords(hello, 1),
		"with more data": append(append([]byte{}, hello...), 0x17, 3, 3, 0, 1, 0),
	} {
		t.Run(name, func(t *testing.T) {
			sni, raw, err := TLSServerName(iotest.OneByteReader(bytes.NewReader(in)), 16384)
			if err != nil || sni != "www.example.com" {
				t.Fatalf("got %q, %v", sni, err)
			}
			if !bytes.HasPrefix(in, raw) || len(raw) < len(hello) {
				t.Fatalf("replay bytes are not the bytes read")
			}
		})
	}
}

func TestTLSNoSNI(t *testing.T) {
	hello := clientHello(t, "")
	sni, _, err := TLSServerName(bytes.NewReader(hello), 16384)
	if err != nil || sni != "" {
		t.Fatalf("got %q, %v; want empty name", sni, err)
	}
}

func TestTLSErrors(t *testing.T) {
	hello := clientHello(t, "a.example")
	if _, raw, err := TLSServerName(strings.NewReader("GET / HTTP/1.1\r\n"), 16384); !errors.Is(err, ErrNotTLS) || string(raw) != "GET /" {
		t.Fatalf("plain text: %v (read %q)", err, raw)
	}
	if _, _, err := TLSServerName(bytes.NewReader(splitRecords(hello, 100)), 200); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	if _, _, err := TLSServerName(bytes.NewReader(hello[:len(hello)-10]), 16384); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	// Corrupt every length byte in turn: the parser must fail closed, never panic.
	for i := 5; i < len(hello); i++ {
		bad := append([]byte{}, hello...)
		bad[i] ^= 0xff
		_, _, _ = TLSServerName(bytes.NewReader(bad), 16384)
	}
}

func FuzzTLSServerName(f *testing.F) {
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { _, _, _ = TLSServerName(bytes.NewReader(b), 16384) })
}

func FuzzHTTPHost(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _, _ = HTTPHost(bytes.NewReader(b), 4096) })
}
