// Package acme gives the router certificates for the names whose routes ask for TLS
// termination: operator-provided files, and certificates obtained from an ACME CA with
// CertMagic (Caddy's certificate library: ACME client, storage with locks, renewal,
// OCSP stapling, ACME Renewal Info).
//
// A certificate is obtained when a TLS handshake for a name needs one, never before and
// only for a name the gateway routes with termination (never for an arbitrary SNI value),
// spaced per name and limited over all names (Gate). Once obtained it is stored under the
// router's state directory, served from memory and renewed by CertMagic's maintenance; a
// restart loads it from storage instead of asking the CA again. Names under a configured
// wildcard domain use DNS-01 through the gateway's own DNS (RedisDNS), the others HTTP-01
// (answered on port 80 by the router) and TLS-ALPN-01 (answered on 443).
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/redis/go-redis/v9"

	"tfgateway.dev/dataplane/router/internal/config"
)

// Options configure a Manager.
type Options struct {
	TLS *config.TLS
	// Routed reports whether the gateway terminates TLS for name (a route asks for it);
	// certificates are obtained for no other name.
	Routed func(name string) bool
	// Redis holds the zones the gateway's DNS serves (DNS-01); needed for Wildcards.
	Redis *redis.Client
	// Where the router listens, so CertMagic never opens challenge listeners of its own
	// (its attempt finds the router's sockets there and defers to the router).
	ListenHost        string
	HTTPPort, TLSPort int
	// MaxWaiting bounds the handshakes waiting for a certificate being obtained.
	MaxWaiting int
	// ObtainTimeout bounds one attempt to obtain a certificate.
	ObtainTimeout time.Duration
	Log           *slog.Logger
	Metrics       *Metrics
}

// Manager serves certificates to TLS handshakes (GetCertificate) and answers HTTP-01
// challenges (HandleHTTPChallenge).
type Manager struct {
	opt     Options
	log     *slog.Logger
	cache   *certmagic.Cache
	http    *certmagic.Config // HTTP-01 and TLS-ALPN-01
	dns     *certmagic.Config // DNS-01: wildcards and the names under them
	httpIss *certmagic.ACMEIssuer
	gate    *Gate
	waiting chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc

	mu       sync.Mutex
	inflight map[string]*flight
	managed  map[string]bool // names of certificates loaded or obtained (true: operator's)
}

type flight struct {
	done chan struct{}
	err  error
}

// Errors.
var (
	// ErrNoCertificate wraps every error GetCertificate returns (the handshake fails).
	ErrNoCertificate = errors.New("no certificate")
	ErrNoACME        = errors.New("no ACME CA configured ([tls] acme_ca) and no operator certificate covers the name")
	ErrWaitTimeout   = errors.New("the certificate is still being obtained")
)

// New loads the operator certificates and prepares CertMagic; Start begins the work.
func New(opt Options) (*Manager, error) {
	t := opt.TLS
	if opt.MaxWaiting == 0 {
		opt.MaxWaiting = 1024
	}
	if opt.ObtainTimeout == 0 {
		opt.ObtainTimeout = 3 * time.Minute
	}
	if opt.Metrics == nil {
		opt.Metrics = NewMetrics()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		opt: opt, log: opt.Log, ctx: ctx, cancel: cancel,
		gate:     NewGate(t.RetryMin, t.RetryMax, t.IssueRate, 100000),
		waiting:  make(chan struct{}, opt.MaxWaiting),
		inflight: map[string]*flight{},
		managed:  map[string]bool{},
	}
	if err := os.MkdirAll(t.Storage, 0o700); err != nil {
		cancel()
		return nil, fmt.Errorf("[tls] storage: %w", err)
	}
	zl := zapToSlog(m.log)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(c certmagic.Certificate) (*certmagic.Config, error) {
			if len(c.Names) > 0 {
				return m.configFor(c.Names[0]), nil
			}
			return m.http, nil
		},
		RenewCheckInterval: t.RenewCheck,
		Logger:             zl,
	})
	base := certmagic.Config{
		Storage:        &certmagic.FileStorage{Path: t.Storage},
		Logger:         zl,
		Issuers:        []certmagic.Issuer{}, // never CertMagic's default (Let's Encrypt)
		OnEvent:        m.onEvent,
		ShouldEmitFunc: func(e string) bool { return e == "cert_obtained" || e == "cert_failed" },
	}
	m.http = certmagic.New(m.cache, base)
	m.dns = certmagic.New(m.cache, base)
	if err := m.loadOperatorCertificates(); err != nil {
		m.Stop()
		return nil, err
	}
	if t.ACMECA == "" {
		return m, nil
	}
	roots, err := trustedRoots(t.ACMECARoot)
	if err != nil {
		m.Stop()
		return nil, err
	}
	template := certmagic.ACMEIssuer{
		CA: t.ACMECA, Email: t.ACMEEmail, Agreed: true, Profile: t.ACMEProfile, TrustedRoots: roots,
		ListenHost: opt.ListenHost, AltHTTPPort: opt.HTTPPort, AltTLSALPNPort: opt.TLSPort, Logger: zl,
	}
	httpT := template
	httpT.DisableHTTPChallenge = !slices.Contains(t.Challenges, config.ChallengeHTTP01)
	httpT.DisableTLSALPNChallenge = !slices.Contains(t.Challenges, config.ChallengeTLSALPN01)
	if !httpT.DisableHTTPChallenge || !httpT.DisableTLSALPNChallenge {
		m.httpIss = certmagic.NewACMEIssuer(m.http, httpT)
		m.http.Issuers = []certmagic.Issuer{nonInteractive{m.httpIss}}
	}
	if len(t.Wildcards) > 0 {
		if opt.Redis == nil {
			m.Stop()
			return nil, errors.New("[tls] wildcards need DNS-01 through the gateway's DNS: configure [server.dbbackend] redis")
		}
		dnsT := template
		dnsT.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider:        &RedisDNS{Client: opt.Redis, Resolver: t.DNSResolver, Wait: time.Minute, Poll: 50 * time.Millisecond},
			TTL:                time.Minute,
			PropagationTimeout: -1, // RedisDNS waits for the gateway's own answer
			Resolvers:          []string{t.DNSResolver},
			Logger:             zl,
		}}
		m.dns.Issuers = []certmagic.Issuer{nonInteractive{certmagic.NewACMEIssuer(m.dns, dnsT)}}
	}
	return m, nil
}

// nonInteractive keeps CertMagic from asking for an email address on standard input, as
// it does in interactive obtains (ManageSync) when none is configured.
type nonInteractive struct{ *certmagic.ACMEIssuer }

func (i nonInteractive) PreCheck(ctx context.Context, names []string, _ bool) error {
	return i.ACMEIssuer.PreCheck(ctx, names, false)
}

func trustedRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("[tls] acme_ca_root: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("[tls] acme_ca_root %s: no PEM certificate in it", path)
	}
	return pool, nil
}

func (m *Manager) loadOperatorCertificates() error {
	for _, c := range m.opt.TLS.Certificates {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return fmt.Errorf("[[tls.certificates]] %s: %w", c.Cert, err)
		}
		if _, err := m.http.CacheUnmanagedTLSCertificate(m.ctx, pair, []string{"operator"}); err != nil {
			return fmt.Errorf("[[tls.certificates]] %s: %w", c.Cert, err)
		}
		leaf := pair.Leaf
		names := append([]string(nil), leaf.DNSNames...)
		if len(names) == 0 && leaf.Subject.CommonName != "" {
			names = append(names, leaf.Subject.CommonName)
		}
		m.mu.Lock()
		for _, n := range names {
			m.managed[strings.ToLower(n)] = true
		}
		m.mu.Unlock()
		m.log.Info("operator certificate loaded", "file", c.Cert, "names", names, "not_after", leaf.NotAfter)
	}
	return nil
}

// Start forgets, every renew_check, the certificates of names no longer routed.
func (m *Manager) Start() {
	go func() {
		tick := time.NewTicker(m.opt.TLS.RenewCheck)
		defer tick.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-tick.C:
				m.Sweep()
			}
		}
	}()
}

// Stop ends maintenance and cancels attempts in progress.
func (m *Manager) Stop() {
	m.cancel()
	m.cache.Stop()
}

// subject is the certificate name serves from: *.D for a name one label under a wildcard
// domain D, else the name itself.
func (m *Manager) subject(name string) string {
	for _, d := range m.opt.TLS.Wildcards {
		if label, ok := strings.CutSuffix(name, "."+d); ok && label != "" && !strings.Contains(label, ".") {
			return "*." + d
		}
	}
	return name
}

func (m *Manager) configFor(name string) *certmagic.Config {
	if m.opt.TLS.UsesDNS01(name) {
		return m.dns
	}
	return m.http
}

// GetCertificate is the tls.Config callback: a certificate from memory, else one from
// storage or the CA for a routed name (the handshake waits up to issue_wait for it), else
// an error (the handshake fails with an alert; the error says why).
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	cfg := m.configFor(name)
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		return cfg.GetCertificate(hello) // a TLS-ALPN-01 validation: CertMagic's challenge certificate
	}
	if cert, err := cfg.GetCertificate(hello); err == nil {
		return cert, nil
	}
	if err := m.await(hello, name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoCertificate, err)
	}
	cert, err := cfg.GetCertificate(hello)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoCertificate, err)
	}
	return cert, nil
}

// await makes a certificate for name available (loaded or obtained: name's own, or the
// wildcard that covers it), or says why not.
func (m *Manager) await(hello *tls.ClientHelloInfo, name string) error {
	if name == "" || !m.opt.Routed(name) {
		return m.refuse(&Refusal{Reason: ReasonNotRouted, Name: name})
	}
	name = m.subject(name)
	if err := m.gate.Ready(name); err != nil {
		return m.refuse(err)
	}
	select {
	case m.waiting <- struct{}{}:
		defer func() { <-m.waiting }()
	default:
		return m.refuse(&Refusal{Reason: ReasonBusy, Name: name})
	}
	wait := m.opt.TLS.IssueWait
	if hello.Conn != nil {
		_ = hello.Conn.SetDeadline(time.Now().Add(wait))
	}
	f := m.start(name)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	ctx := hello.Context()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("%w for %q (waited %s)", ErrWaitTimeout, name, wait)
	}
}

func (m *Manager) refuse(err error) error {
	var r *Refusal
	if errors.As(err, &r) {
		m.opt.Metrics.Decisions.WithLabelValues(r.Reason).Inc()
	}
	return err
}

// start runs one attempt for name at a time; later handshakes wait for the same one.
func (m *Manager) start(name string) *flight {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.inflight[name]; f != nil {
		return f
	}
	f := &flight{done: make(chan struct{})}
	m.inflight[name] = f
	go func() {
		f.err = m.obtain(name)
		m.mu.Lock()
		delete(m.inflight, name)
		m.mu.Unlock()
		close(f.done)
	}()
	return f
}

// obtain loads name's certificate from storage, or (within the gate's limits) obtains it.
func (m *Manager) obtain(name string) error {
	cfg := m.configFor(name)
	ctx, cancel := context.WithTimeout(m.ctx, m.opt.ObtainTimeout)
	defer cancel()
	stored := m.stored(ctx, cfg, name)
	if !stored {
		if len(cfg.Issuers) == 0 {
			m.opt.Metrics.Decisions.WithLabelValues("no_acme").Inc()
			return fmt.Errorf("%q: %w", name, ErrNoACME)
		}
		if err := m.gate.Start(name); err != nil {
			return m.refuse(err)
		}
	}
	err := cfg.ManageSync(ctx, []string{name})
	if err != nil {
		retry := m.gate.Failed(name, err)
		m.opt.Metrics.Decisions.WithLabelValues("failed").Inc()
		m.log.Warn("certificate not obtained; the name backs off", "name", name, "retry_in", retry.String(), "err", err)
		return fmt.Errorf("no certificate for %q: %w", name, err)
	}
	m.gate.Succeeded(name)
	m.mu.Lock()
	m.managed[name] = false
	m.mu.Unlock()
	if stored {
		m.opt.Metrics.Decisions.WithLabelValues("loaded").Inc()
		m.log.Info("certificate loaded from storage", "name", name)
	} else {
		m.opt.Metrics.Decisions.WithLabelValues("obtained").Inc()
	}
	return nil
}

// stored reports whether storage holds a certificate for name from one of cfg's issuers.
func (m *Manager) stored(ctx context.Context, cfg *certmagic.Config, name string) bool {
	for _, iss := range cfg.Issuers {
		if cfg.Storage.Exists(ctx, certmagic.StorageKeys.SiteCert(iss.IssuerKey(), name)) {
			return true
		}
	}
	return false
}

// HandleHTTPChallenge answers an ACME HTTP-01 validation request; false if r is none
// the router started.
func (m *Manager) HandleHTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	return m.httpIss != nil && m.httpIss.HandleHTTPChallenge(w, r)
}

// Sweep stops maintaining certificates of names that lost their route (their files stay
// in storage and serve again if the route comes back) and forgets their attempts.
func (m *Manager) Sweep() {
	m.mu.Lock()
	var gone []certmagic.SubjectIssuer
	for name, operator := range m.managed {
		if operator || strings.HasPrefix(name, "*.") || m.opt.Routed(name) { // wildcards stay
			continue
		}
		gone = append(gone, certmagic.SubjectIssuer{Subject: name})
		delete(m.managed, name)
	}
	m.mu.Unlock()
	if len(gone) > 0 {
		m.cache.RemoveManaged(gone)
		m.log.Info("certificates no longer maintained: routes gone", "count", len(gone))
	}
	m.gate.Forget(func(name string) bool { return strings.HasPrefix(name, "*.") || m.opt.Routed(name) })
}

// onEvent turns CertMagic's events into metrics and one log line per outcome.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	kind := "obtained"
	if renewal {
		kind = "renewed"
	}
	switch event {
	case "cert_obtained":
		m.opt.Metrics.Certificates.WithLabelValues(kind).Inc()
		m.log.Info("certificate "+kind, "name", name, "issuer", data["issuer"])
	case "cert_failed":
		m.opt.Metrics.Certificates.WithLabelValues(kind + "_failed").Inc()
		if renewal {
			m.log.Warn("certificate renewal failed; CertMagic retries with back-off", "name", name, "err", data["error"])
		}
	}
	return nil
}

// expiries returns, per maintained or operator name, the latest expiry of the
// certificates that serve it.
func (m *Manager) expiries() map[string]time.Time {
	m.mu.Lock()
	names := make([]string, 0, len(m.managed))
	for n := range m.managed {
		names = append(names, n)
	}
	m.mu.Unlock()
	out := make(map[string]time.Time, len(names))
	for _, n := range names {
		for _, c := range m.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(out[n]) {
				out[n] = c.Leaf.NotAfter
			}
		}
	}
	return out
}
