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
	if err := fs.Parse(args); err != nil {
		return 2
	}
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
	r := router.New(cfg, router.Options{Log: log, MaxPending: cfg.Limits.MaxPending,
		PendingPerSource: cfg.Limits.PendingPerSource, ConnsPerSource: cfg.Limits.ConnectionsPerSource,
		IPv6SourcePrefix: cfg.Limits.IPv6SourcePrefix})

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
