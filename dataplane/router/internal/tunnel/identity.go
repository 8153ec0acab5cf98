package tunnel

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Identity is the router's key pair for authenticated tunnels: a self-signed certificate
// around an Ed25519 key that clients pin by the SHA-256 of its public key (SPKI).
type Identity struct {
	Cert tls.Certificate
	Pin  string // "sha256/<base64 of SHA-256(SubjectPublicKeyInfo)>"
}

// LoadOrCreateIdentity reads the PKCS#8 PEM key at path, or generates one and stores it
// there (0600, its directory created 0700) when the file does not exist. created tells
// which.
func LoadOrCreateIdentity(path string) (id *Identity, created bool, err error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist):
		if data, err = createKey(path); err != nil {
			return nil, false, err
		}
		created = true
	default:
		return nil, false, fmt.Errorf("tunnel key %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, false, fmt.Errorf("tunnel key %s: not a PEM \"PRIVATE KEY\" (PKCS#8)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("tunnel key %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, false, fmt.Errorf("tunnel key %s: %T is not an Ed25519 key", path, k)
	}
	id, err = NewIdentity(key)
	return id, created, err
}

func createKey(path string) ([]byte, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("tunnel key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tunnel-key-*")
	if err != nil {
		return nil, fmt.Errorf("tunnel key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("tunnel key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("tunnel key: %w", err)
	}
	// Link, not rename: two routers starting at once keep the first key, never swap it.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return os.ReadFile(path)
		}
		return nil, fmt.Errorf("tunnel key: %w", err)
	}
	return data, nil
}

// NewIdentity wraps key in a self-signed certificate (its fields other than the key mean
// nothing to clients, which check only the pin).
func NewIdentity(key ed25519.PrivateKey) (*Identity, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "tfgateway tunnel listener"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(100, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Identity{
		Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
		Pin:  PinOf(cert),
	}, nil
}

// PinOf is the pin of a certificate's public key.
func PinOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256/" + base64.StdEncoding.EncodeToString(sum[:])
}

// ParsePin checks a pin ("sha256/<base64>"; curl's "sha256//<base64>" is accepted too).
func ParsePin(pin string) ([]byte, error) {
	b64, ok := strings.CutPrefix(pin, "sha256/")
	if !ok {
		return nil, fmt.Errorf("pin %q does not start with sha256/", pin)
	}
	// The base64 itself may start with "/" (one key in 64): try it as it is first, then as
	// curl's "sha256//<base64>".
	sum, err := base64.StdEncoding.DecodeString(b64)
	if (err != nil || len(sum) != sha256.Size) && strings.HasPrefix(b64, "/") {
		sum, err = base64.StdEncoding.DecodeString(b64[1:])
	}
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("pin %q is not sha256/ and the base64 of 32 bytes", pin)
	}
	return sum, nil
}

// ErrPinMismatch: the server's key is not the pinned one.
var ErrPinMismatch = errors.New("the gateway's key does not match the pin")

// VerifyPin returns a tls.Config.VerifyConnection that accepts only the pinned key.
func VerifyPin(sum []byte) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return ErrPinMismatch
		}
		got := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
		if subtle.ConstantTimeCompare(got[:], sum) != 1 {
			return fmt.Errorf("%w (the gateway presented %s)", ErrPinMismatch, PinOf(cs.PeerCertificates[0]))
		}
		return nil
	}
}
