package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// yamux version 0 framing (data-plane spec §2.5): version u8 | type u8 | flags u16 |
// stream id u32 | length u32, all big-endian.
const (
	yamuxHeader     = 12
	yamuxData       = 0
	yamuxWindow     = 1
	yamuxPing       = 2
	yamuxFlagSYN    = 1
	maxLegacyFrames = 16
)

// PeekLegacyHandshake reads the frames a trc client sends first — a window update opening
// stream 1 (SYN), then the handshake in one data frame (or several: we do not rely on
// trc's single write), perhaps pings — without starting a yamux session, so the secret
// can be checked before anything is created for the connection. It returns the secret and
// every byte it read, which the caller replays into the real yamux session. At most
// maxLegacyFrames frames and 4+maxSecret bytes of data are read.
func PeekLegacyHandshake(r io.Reader, maxSecret int) (string, []byte, error) {
	var raw bytes.Buffer
	tr := io.TeeReader(r, &raw)
	var hs []byte
	opened := false
	for range maxLegacyFrames {
		var h [yamuxHeader]byte
		if _, err := io.ReadFull(tr, h[:]); err != nil {
			return "", nil, &HandshakeError{Reason: fmt.Sprintf("reading yamux header: %v", err)}
		}
		if h[0] != 0 {
			return "", nil, &HandshakeError{Reason: fmt.Sprintf("yamux version %d", h[0])}
		}
		flags := binary.BigEndian.Uint16(h[2:4])
		id := binary.BigEndian.Uint32(h[4:8])
		length := binary.BigEndian.Uint32(h[8:12])
		switch h[1] {
		case yamuxPing:
			if id != 0 {
				return "", nil, &HandshakeError{Reason: "ping on a stream"}
			}
			continue
		case yamuxWindow, yamuxData:
		default:
			return "", nil, &HandshakeError{Reason: fmt.Sprintf("yamux frame type %d before the handshake", h[1])}
		}
		if id != 1 {
			return "", nil, &HandshakeError{Reason: fmt.Sprintf("stream %d before the handshake stream", id)}
		}
		if !opened {
			if flags&yamuxFlagSYN == 0 {
				return "", nil, &HandshakeError{Reason: "handshake stream not opened with SYN"}
			}
			opened = true
		}
		if h[1] == yamuxWindow {
			continue // length is a window delta, no payload
		}
		want := 4 + maxSecret
		if len(hs) >= 4 {
			want = 4 + int(binary.BigEndian.Uint16(hs[2:4]))
		}
		if int(length) > want-len(hs) {
			return "", nil, &HandshakeError{Reason: fmt.Sprintf("%v: data frame of %d bytes", ErrSecretTooLong, length)}
		}
		start := len(hs)
		hs = append(hs, make([]byte, length)...)
		if _, err := io.ReadFull(tr, hs[start:]); err != nil {
			return "", nil, &HandshakeError{Reason: fmt.Sprintf("reading handshake: %v", err)}
		}
		if len(hs) < 4 {
			continue
		}
		n := int(binary.BigEndian.Uint16(hs[2:4]))
		if len(hs) < 4+n && n <= maxSecret && n > 0 && binary.BigEndian.Uint16(hs[:2]) == Magic {
			continue
		}
		secret, err := ReadHandshake(bytes.NewReader(hs), maxSecret)
		if err != nil {
			return "", nil, err
		}
		return secret, raw.Bytes(), nil
	}
	return "", nil, &HandshakeError{Reason: fmt.Sprintf("no handshake within %d yamux frames", maxLegacyFrames)}
}

// replayConn reads the bytes already consumed before the rest of the connection.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func withReplay(c net.Conn, consumed []byte) net.Conn {
	return &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(consumed), c)}
}
