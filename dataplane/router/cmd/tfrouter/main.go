// Command tfrouter is the gateway's TCP router, a drop-in for tcprouter's trs v0.1.0:
// same router.toml, same redis keys, same trc tunnel protocol.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tfgateway.dev/dataplane/router/internal/config"
	"tfgateway.dev/dataplane/router/internal/router"
	"tfgateway.dev/dataplane/router/internal/tunnel"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("tfrouter", flag.ContinueOnError)
	cfgPath := fs.String("config", "config.toml", "path of router.toml (trs format)")
	metrics := fs.String("metrics", "", "listen address for Prometheus /metrics (off when empty)")
	debug := fs.Bool("debug", false, "debug logging")
	jsonLogs := fs.Bool("log-json", false, "log as JSON instead of text")
	version := fs.Bool("version", false, "print the version and exit")
	tunnelStreams := fs.Int("tunnel-streams", 0, fmt.Sprintf("most concurrent connections through one tunnel (overrides [tunnels] max_streams; default %d)", router.DefaultTunnelStreams))
	tunnelMemory := fs.Int("tunnel-memory-mib", 0, fmt.Sprintf("receive-buffer budget of one tunnel in MiB; each connection through it needs 256 KiB, more only for bulk transfers while the budget allows (overrides [tunnels] memory_mib; default %d)", router.DefaultTunnelMemoryMiB))
	legacy := fs.Bool("legacy-tunnels", true, "accept trc v0.1.0's clear-text tunnel handshake on the clients port (overrides [tunnels] legacy)")
	dataConns := fs.Bool("tunnel-data-connections", true, "offer authenticated tunnel clients data connections: each public connection on a TCP connection of its own, spliced (overrides [tunnels] data_connections)")
	tunnelKey := fs.String("tunnel-key", "", "PEM file of the key for authenticated tunnels, created at the first start (overrides [tunnels] key; empty: authenticated tunnels off)")
	printPin := fs.Bool("tunnel-pin", false, "print the pin of the tunnel key (tftunnel --pin) and exit; creates the key if missing")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *version {
		fmt.Println("tfrouter", Version)
		return 0
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, hopts)
	if *jsonLogs {
		h = slog.NewJSONHandler(os.Stderr, hopts)
	}
	log := slog.New(h)

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if set["legacy-tunnels"] {
		cfg.Tunnels.Legacy = legacy
	}
	if set["tunnel-data-connections"] {
		cfg.Tunnels.DataConnections = dataConns
	}
	if set["tunnel-key"] {
		cfg.Tunnels.Key = *tunnelKey
	}
	if *printPin && cfg.Tunnels.Key == "" {
		fmt.Fprintln(os.Stderr, "tfrouter: -tunnel-pin needs a key: -tunnel-key or [tunnels] key")
		return 2
	}
	if !cfg.Tunnels.LegacyAllowed() && cfg.Tunnels.Key == "" {
		log.Error("cannot start", "err", "legacy tunnels are off and there is no tunnel key (-tunnel-key or [tunnels] key): no tunnel client could register")
		return 1
	}
	opts := router.Options{
		Log:                 log,
		MaxPending:          cfg.Limits.MaxPending,
		PendingPerSource:    cfg.Limits.PendingPerSource,
		ConnsPerSource:      cfg.Limits.ConnectionsPerSource,
		IPv6SourcePrefix:    cfg.Limits.IPv6SourcePrefix,
		RefuseLegacyTunnels: !cfg.Tunnels.LegacyAllowed(),
		NoDataConnections:   !cfg.Tunnels.DataConnectionsAllowed(),
		TunnelSources: tunnel.SourceLimits{
			HandshakesPerMinute: cfg.Tunnels.HandshakesPerMinute, HandshakeBurst: cfg.Tunnels.HandshakeBurst,
			MaxConnsPerSource: cfg.Tunnels.ConnsPerSource, MaxSources: cfg.Tunnels.Sources,
			MaxPendingPerSource: cfg.Tunnels.PendingPerSource,
		},
		TunnelMaxPending: cfg.Tunnels.MaxPending,
	}
	if cfg.Tunnels.Key != "" {
		id, created, err := tunnel.LoadOrCreateIdentity(cfg.Tunnels.Key)
		if err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
		if *printPin {
			fmt.Println(id.Pin)
			return 0
		}
		if created {
			log.Info("created the tunnel key", "path", cfg.Tunnels.Key)
		}
		log.Info("authenticated tunnels: clients pin this key", "pin", id.Pin, "client", "tftunnel --pin "+id.Pin)
		opts.TunnelIdentity = id
	}
	if *tunnelStreams < 0 || *tunnelMemory < 0 {
		log.Error("cannot start", "err", "-tunnel-streams and -tunnel-memory-mib must not be negative")
		return 2
	}
	opts.Tunnel.MaxStreamsPerTunnel = *tunnelStreams
	opts.Tunnel.TunnelMemory = *tunnelMemory << 20
	r := router.New(cfg, opts)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if *metrics != "" {
		ln, err := net.Listen("tcp", *metrics)
		if err != nil {
			log.Error("cannot start", "err", &router.ListenError{Listener: "metrics", Addr: *metrics, Err: err})
			return 1
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(r.Metrics.Registry, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
			}
		}()
		defer srv.Close()
		log.Info("metrics", "addr", ln.Addr().String())
	}
	log.Info("tfrouter starting", "version", Version, "config", *cfgPath)
	if err := r.Run(ctx); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	log.Info("tfrouter stopped")
	return 0
}
