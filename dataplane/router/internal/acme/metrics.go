package acme

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the certificate series; Register adds them with the expiry collector.
type Metrics struct {
	// Decisions counts what handshakes that needed a certificate got: obtained, loaded
	// (from storage), failed, no_acme and the refusals (not_routed, backoff, rate_limited,
	// busy, too_many_names).
	Decisions *prometheus.CounterVec
	// Certificates counts CertMagic's outcomes: obtained, renewed, obtained_failed,
	// renewed_failed (maintenance and wildcards included).
	Certificates *prometheus.CounterVec
}

// NewMetrics returns unregistered metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_acme_decisions_total", Help: "TLS handshakes that needed a certificate not in memory, by outcome.",
		}, []string{"result"}),
		Certificates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_acme_certificates_total", Help: "Certificates obtained and renewed from the ACME CA, and failed attempts.",
		}, []string{"event"}),
	}
}

var (
	expiryDesc = prometheus.NewDesc("tfrouter_tls_certificate_expiry_days",
		"Days until the certificate serving a name expires (negative: expired).", []string{"name"}, nil)
	failingDesc = prometheus.NewDesc("tfrouter_acme_failing_names",
		"Routed names whose last attempt to obtain a certificate failed (they back off).", nil, nil)
)

// Collector reports the expiry of every certificate the router serves and how many names
// are failing; read at scrape time from the certificate cache.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Manager }

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc; ch <- failingDesc }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for name, exp := range c.m.expiries() {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, exp.Sub(now).Hours()/24, name)
	}
	ch <- prometheus.MustNewConstMetric(failingDesc, prometheus.GaugeValue, float64(len(c.m.gate.Failing())))
}

// Register adds the metrics and the collector to reg.
func (m *Manager) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.opt.Metrics.Decisions, m.opt.Metrics.Certificates, m.Collector()} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Metrics returns the manager's counters.
func (m *Manager) Metrics() *Metrics { return m.opt.Metrics }
