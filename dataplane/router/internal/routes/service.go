// Package routes holds the route table: which backend or tunnel serves a host name. It is
// read on every connection without locks and replaced or patched by the redis feed.
package routes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// KeyPrefix is the redis key prefix tcprouter v0.1.0 reads (valkeyrie 1ae9442 keeps the
// leading slash) and tfgateway writes.
const KeyPrefix = "/tcprouter/service/"

// Service is where connections for one host go: a direct backend (Addr and ports) or a
// reverse tunnel (ClientSecret).
type Service struct {
	Addr         string
	TLSPort      uint16
	HTTPPort     uint16
	ClientSecret string
	// Terminate says how the TLS listener serves the name: passed through untouched (the
	// zero value, tcprouter's behaviour) or terminated here and forwarded in clear to the
	// plain port (HTTPPort, or the tunnel client's --local).
	Terminate Termination
	// Redirect answers plain HTTP requests for the name with a redirect to HTTPS.
	Redirect bool
	// ProxyProtocol is the PROXY protocol version (1 or 2) written to the backend before
	// the client's bytes; 0: none.
	ProxyProtocol uint8
	// Static entries come from router.toml and may name any address.
	Static bool
}

// Termination is what the TLS listener does with a name's connections.
type Termination string

// The values of the optional "terminate" key of a route.
const (
	Passthrough   Termination = ""     // TLS goes to the backend as it came (tcprouter)
	TerminateHTTP Termination = "http" // decrypted HTTP with X-Forwarded-For/-Proto/-Host
	TerminateTCP  Termination = "tcp"  // the decrypted byte stream as it is
)

// ParseTermination checks a "terminate" value.
func ParseTermination(v string) (Termination, error) {
	switch t := Termination(strings.ToLower(v)); t {
	case Passthrough, TerminateHTTP, TerminateTCP:
		return t, nil
	}
	return "", fmt.Errorf("terminate %q is not one of \"\", \"http\", \"tcp\"", v)
}

// CheckProxyProtocol checks a "proxyprotocol" value.
func CheckProxyProtocol(v int) (uint8, error) {
	if v != 0 && v != 1 && v != 2 {
		return 0, fmt.Errorf("proxyprotocol %d is not 0, 1 or 2", v)
	}
	return uint8(v), nil
}

// IsTunnel reports whether connections go through a registered trc tunnel.
func (s Service) IsTunnel() bool { return s.ClientSecret != "" }

// DecodeError explains why a redis value is not a usable service.
type DecodeError struct {
	Key string
	Err error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("route %s: %v", e.Key, e.Err) }
func (e *DecodeError) Unwrap() error { return e.Err }

// ErrForbiddenTarget is returned for redis entries that point at loopback, unspecified,
// link-local or multicast addresses: a user must not reach the gateway's own services.
var ErrForbiddenTarget = errors.New("target address not allowed")

// envelope is valkeyrie's KVPair as stored by tcprouter and tfgateway. Value is []byte, so
// JSON carries it as standard base64.
type envelope struct {
	Key       string
	Value     []byte
	LastIndex uint64
}

// inner has no json tags, like tcprouter's Service: Go matches keys case-insensitively and
// ignores unknown ones such as tfgateway's "user". Terminate, Redirect and ProxyProtocol are
// tfgateway's optional keys: written only for routes that use them, so every other record
// keeps the Go daemon's bytes, and tcprouter ignores them.
type inner struct {
	Addr          string
	ClientSecret  string
	TLSPort       int
	HTTPPort      int
	Terminate     string
	Redirect      bool
	ProxyProtocol int
}

// Decode parses the value of a /tcprouter/service/<host> key. The target address is not
// checked here; the feed applies a TargetPolicy (CheckTarget in production).
func Decode(key string, raw []byte) (Service, error) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return Service{}, &DecodeError{Key: key, Err: fmt.Errorf("envelope: %w", err)}
	}
	var in inner
	if err := json.Unmarshal(env.Value, &in); err != nil {
		return Service{}, &DecodeError{Key: key, Err: fmt.Errorf("value: %w", err)}
	}
	svc := Service{Addr: in.Addr, ClientSecret: in.ClientSecret, Redirect: in.Redirect}
	var err error
	if svc.Terminate, err = ParseTermination(in.Terminate); err != nil {
		return Service{}, &DecodeError{Key: key, Err: err}
	}
	if svc.ProxyProtocol, err = CheckProxyProtocol(in.ProxyProtocol); err != nil {
		return Service{}, &DecodeError{Key: key, Err: err}
	}
	for _, p := range []struct {
		name string
		v    int
		dst  *uint16
	}{{"tlsport", in.TLSPort, &svc.TLSPort}, {"httpport", in.HTTPPort, &svc.HTTPPort}} {
		if p.v < 0 || p.v > 65535 {
			return Service{}, &DecodeError{Key: key, Err: fmt.Errorf("%s %d out of range", p.name, p.v)}
		}
		*p.dst = uint16(p.v)
	}
	return svc, nil
}

// TargetPolicy decides whether a direct route from redis may be dialled.
type TargetPolicy func(addr string) error

// CheckTarget accepts only IP literals that are not loopback, unspecified, link-local or
// multicast (defence in depth behind the agent's own check).
func CheckTarget(addr string) error {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address", ErrForbiddenTarget, addr)
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() {
		return fmt.Errorf("%w: %s", ErrForbiddenTarget, ip)
	}
	return nil
}

// HostFromKey returns the host of a /tcprouter/service/<host> key.
func HostFromKey(key string) (string, bool) {
	host, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok || host == "" {
		return "", false
	}
	return host, true
}
