package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// TLS is the optional [tls] table: certificates for the names whose routes ask for TLS
// termination. trs ignores it. Without it, terminated routes cannot be served.
type TLS struct {
	// Storage is the directory of certificates, keys and the ACME account (the router's
	// state directory); required.
	Storage string `toml:"storage"`
	// ACMECA is the ACME directory URL; empty: no ACME, operator certificates only.
	ACMECA string `toml:"acme_ca"`
	// ACMEEmail is the account's contact address (optional).
	ACMEEmail string `toml:"acme_email"`
	// ACMECARoot is a PEM file of roots trusted for the ACME server's own HTTPS (a private
	// CA such as Pebble or step-ca); empty: the system roots.
	ACMECARoot string `toml:"acme_ca_root"`
	// ACMEProfile asks the CA for a certificate profile (empty: the CA's default).
	ACMEProfile string `toml:"acme_profile"`
	// Challenges enabled for names outside Wildcards: "http-01", "tls-alpn-01".
	Challenges []string `toml:"challenges"`
	// Wildcards are domains D whose names one label below are served by one certificate
	// for *.D, obtained by DNS-01 through the gateway's own DNS when the first of them needs
	// it; other names under D (D itself, deeper names) get their own, by DNS-01 too.
	Wildcards []string `toml:"wildcards"`
	// DNSResolver is the gateway's DNS server (host:port), where DNS-01 records are
	// checked before the CA is asked to look.
	DNSResolver string `toml:"dns_resolver"`
	// IssueRate is the number of new certificates per hour over all names.
	IssueRate int `toml:"issue_rate"`
	// RetryMin is the first wait after a failed issuance for a name; it doubles per
	// failure up to RetryMax.
	RetryMin time.Duration `toml:"retry_min"`
	RetryMax time.Duration `toml:"retry_max"`
	// IssueWait is how long a TLS handshake may wait for its name's first certificate.
	IssueWait time.Duration `toml:"issue_wait"`
	// RenewCheck is the period of the renewal check (certmagic's RenewCheckInterval).
	RenewCheck time.Duration `toml:"renew_check"`
	// Certificates are operator-provided certificates, served for the names they cover.
	Certificates []Certificate `toml:"certificates"`
}

// Certificate is one [[tls.certificates]] entry: PEM files.
type Certificate struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// Defaults of the [tls] table.
const (
	DefaultIssueRate   = 30
	DefaultRetryMin    = time.Minute
	DefaultRetryMax    = 24 * time.Hour
	DefaultIssueWait   = 60 * time.Second
	DefaultRenewCheck  = 10 * time.Minute
	DefaultDNSResolver = "127.0.0.1:53"
)

// Challenge names.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

func (t *TLS) applyDefaults() {
	if t.IssueRate == 0 {
		t.IssueRate = DefaultIssueRate
	}
	if t.RetryMin == 0 {
		t.RetryMin = DefaultRetryMin
	}
	if t.RetryMax == 0 {
		t.RetryMax = DefaultRetryMax
	}
	if t.IssueWait == 0 {
		t.IssueWait = DefaultIssueWait
	}
	if t.RenewCheck == 0 {
		t.RenewCheck = DefaultRenewCheck
	}
	if t.DNSResolver == "" {
		t.DNSResolver = DefaultDNSResolver
	}
	if t.Challenges == nil {
		t.Challenges = []string{ChallengeHTTP01, ChallengeTLSALPN01}
	}
	for i, d := range t.Wildcards {
		t.Wildcards[i] = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(d, "*."), "."))
	}
}

func (t *TLS) validate() error {
	t.applyDefaults()
	if t.Storage == "" {
		return errors.New("storage (a directory for certificates and the ACME account) is required")
	}
	for _, c := range t.Certificates {
		if c.Cert == "" || c.Key == "" {
			return errors.New("every [[tls.certificates]] needs cert and key")
		}
	}
	if t.ACMECA == "" {
		return nil
	}
	if u, err := url.Parse(t.ACMECA); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("acme_ca %q is not an https:// URL", t.ACMECA)
	}
	for _, c := range t.Challenges {
		if c != ChallengeHTTP01 && c != ChallengeTLSALPN01 {
			return fmt.Errorf("challenges: %q is not %q or %q (DNS-01 is used for wildcards)", c, ChallengeHTTP01, ChallengeTLSALPN01)
		}
	}
	if len(t.Challenges) == 0 && len(t.Wildcards) == 0 {
		return errors.New("challenges is empty and there are no wildcards: no certificate could be obtained")
	}
	for _, d := range t.Wildcards {
		if strings.Count(d, ".") < 1 || strings.ContainsAny(d, "*/ ") {
			return fmt.Errorf("wildcards: %q is not a domain", d)
		}
	}
	if _, _, err := net.SplitHostPort(t.DNSResolver); err != nil {
		return fmt.Errorf("dns_resolver %q is not host:port", t.DNSResolver)
	}
	for name, d := range map[string]time.Duration{"retry_min": t.RetryMin, "retry_max": t.RetryMax,
		"issue_wait": t.IssueWait, "renew_check": t.RenewCheck} {
		if d < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
	}
	if t.RetryMax < t.RetryMin {
		return errors.New("retry_max must not be below retry_min")
	}
	if t.IssueRate < 0 {
		return errors.New("issue_rate must not be negative")
	}
	return nil
}

// UsesDNS01 reports whether certificates for name come by DNS-01 (name is at or under one
// of the wildcard domains).
func (t *TLS) UsesDNS01(name string) bool {
	return slices.ContainsFunc(t.Wildcards, func(d string) bool {
		return name == d || strings.HasSuffix(name, "."+d) || name == "*."+d
	})
}
