package gatewaydns

import (
	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics, exported by the prometheus plugin when it is configured. They tell an operator
// whether the zones in memory follow redis: how many are served, how loads go, and when
// the last full resync succeeded.
var (
	zonesServed = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "zones",
		Help:      "Number of zones served from redis.",
	})
	loadsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "loads_total",
		Help:      "Loads from redis by kind (full, zone) and result (ok, error).",
	}, []string{"kind", "result"})
	lastFullSync = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "last_full_sync_timestamp_seconds",
		Help:      "Unix time of the last successful full resync from redis.",
	})
	oversizedZones = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "oversized_zones",
		Help:      "Zone hashes not loaded because they have more fields than max_fields_per_zone.",
	})
	// changeSeconds splits the time of a change whose writer named the fields, from the
	// moment the subscriber read the writer's message to the moment the new version is served:
	// wait (until the loader takes it), read (HMGET), build, serial (the serial script's round
	// trip) and total. Where a change's time goes under load, without a profiler.
	changeSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "change_seconds",
		Help:      "Time of a named change, by stage (wait, read, build, serial, total).",
		Buckets:   []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1},
	}, []string{"stage"})
	skippedTotal = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "skipped_data_total",
		Help:      "Malformed or oversized owners, records and zone keys that were logged and skipped.",
	})
)
