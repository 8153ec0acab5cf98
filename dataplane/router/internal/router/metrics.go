package router

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NoRoute is the route label for connections that matched nothing; unknown names are never
// used as labels, so clients cannot grow the metric set.
const NoRoute = "-"

// Metrics are the router's Prometheus series, in their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	Connections   *prometheus.CounterVec // listener, route, result
	Bytes         *prometheus.CounterVec // listener, route, direction
	Errors        *prometheus.CounterVec // listener, route, kind
	Active        *prometheus.GaugeVec   // listener
	AcceptErrors  *prometheus.CounterVec // listener
	TunnelStreams *prometheus.CounterVec // tunnel, result
	TunnelBytes   *prometheus.CounterVec // tunnel, direction
	DataConns     *prometheus.CounterVec // result
	TunnelsActive prometheus.Gauge
	Registrations *prometheus.CounterVec // result
	Revocations   *prometheus.CounterVec // what
	Routes        prometheus.Gauge
	Resyncs       *prometheus.CounterVec // result
}

func newMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_connections_total", Help: "Public connections by listener, route and outcome.",
		}, []string{"listener", "route", "result"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_bytes_total", Help: "Bytes proxied; direction in is client to backend.",
		}, []string{"listener", "route", "direction"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_errors_total", Help: "Failed public connections by kind.",
		}, []string{"listener", "route", "kind"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tfrouter_active_connections", Help: "Connections being handled.",
		}, []string{"listener"}),
		AcceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_accept_errors_total", Help: "Transient accept errors (the listener keeps going).",
		}, []string{"listener"}),
		TunnelStreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_tunnel_streams_total", Help: "Streams opened to trc tunnels by outcome.",
		}, []string{"tunnel", "result"}),
		TunnelBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_tunnel_bytes_total", Help: "Bytes through tunnels; direction in is client to tunnel.",
		}, []string{"tunnel", "direction"}),
		DataConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_tunnel_data_connections_total",
			Help: "Tunnel data connections (protocol 2) by outcome: ok, bad_ticket, bad_handshake (clients port); expired, refused_by_client, tunnel_closed, inline (no ticket free: the stream carried the bytes), error (router side).",
		}, []string{"result"}),
		TunnelsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tfrouter_tunnels_active", Help: "Registered live tunnel sessions.",
		}),
		Registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_tunnel_registrations_total", Help: "Tunnel handshakes by outcome.",
		}, []string{"result"}),
		Revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_tunnel_revocations_total",
			Help: "Tunnel sessions closed because no route references their secret any more (what=tunnel), and streams reset because their route was deleted or now names another secret (what=stream).",
		}, []string{"what"}),
		Routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tfrouter_routes", Help: "Routes held from redis.",
		}),
		Resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tfrouter_resyncs_total", Help: "Full route resyncs from redis by outcome.",
		}, []string{"result"}),
	}
	m.Registry.MustRegister(m.Connections, m.Bytes, m.Errors, m.Active, m.AcceptErrors,
		m.TunnelStreams, m.TunnelBytes, m.DataConns, m.TunnelsActive, m.Registrations, m.Revocations, m.Routes, m.Resyncs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
