// Command tftunnel is a reverse-tunnel client for the gateway's router (and for tcprouter's
// trs): it keeps a multiplexed TCP connection open to the gateway's clients port and serves
// every connection the gateway forwards through it from a local service.
//
// It is a drop-in for tcprouter's `trc` v0.1.0, whose module the Go proxy does not serve: the
// same flags and environment variables, and the same wire protocol (go-yamux v1.2.4 with its
// default configuration except a 1 MiB stream receive window, which yamux grants with an
// ordinary window update, and data frames of up to 256 KiB, then a handshake stream carrying
// 0x1111, a 16-bit length and the secret). It fixes trc's defects: streams are served
// concurrently (a slow local service stalls only its own stream), a failed local dial closes
// only that stream, a stream the gateway resets (its public client went away) or whose local
// service fails is reset and its local connection closed at once, the memory of finished
// streams goes back to the kernel, dead sessions are closed before reconnecting, and
// --local-tls has its own environment variable.
//
// With --pin it speaks the gateway's authenticated protocol instead: TLS 1.3 to the
// gateway, whose key must match the pin, then a proof of the secret bound to that TLS
// session, so the secret never crosses the wire and nobody in the middle can take the
// route (README.md). If the gateway offers them, each public connection then comes on a TCP
// connection of its own (a data connection, spliced at both ends) while the TLS session
// stays the control channel; --data-in-tls keeps everything inside the TLS session.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var version = "dev"

// remotes collects a repeatable --remote flag.
type remotes []string

func (r *remotes) String() string { return strings.Join(*r, ",") }

func (r *remotes) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*r = append(*r, part)
		}
	}
	return nil
}

type options struct {
	secret   string
	remotes  remotes
	local    string
	localTLS string
	backoff  time.Duration
	pin      []byte // nil: the legacy trc protocol
	// dataInTLS: every connection inside the TLS session (no data connections).
	dataInTLS bool
}

func parseFlags(args []string, getenv func(string) string) (options, error) {
	var o options
	fs := flag.NewFlagSet("tftunnel", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.StringVar(&o.secret, "secret", getenv("TRC_SECRET"), "secret the gateway routes by, `<threebotid>:<random>` (env TRC_SECRET)")
	fs.Var(&o.remotes, "remote", "gateway clients address host:port; repeat for several gateways (env TRC_REMOTE, comma separated)")
	fs.StringVar(&o.local, "local", getenv("TRC_LOCAL"), "local address for plain connections, host:port (env TRC_LOCAL)")
	fs.StringVar(&o.localTLS, "local-tls", getenv("TRC_LOCAL_TLS"), "local address for TLS connections (default: --local) (env TRC_LOCAL_TLS)")
	backoffSeconds := 5
	if v := getenv("TRC_BACKOFF"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return o, fmt.Errorf("TRC_BACKOFF must be a positive number of seconds, got %q", v)
		}
		backoffSeconds = n
	}
	fs.IntVar(&backoffSeconds, "backoff", backoffSeconds, "seconds to wait before reconnecting (env TRC_BACKOFF)")
	pin := fs.String("pin", getenv("TRC_PIN"), "the gateway's key, `sha256/<base64>` (tfrouter -tunnel-pin prints it; tfgateway status shows it): "+
		"use the authenticated protocol, in which the secret never crosses the wire; without it, trc's clear-text handshake (env TRC_PIN)")
	fs.BoolVar(&o.dataInTLS, "data-in-tls", getenv("TRC_DATA_IN_TLS") != "", "with --pin: carry every connection inside the TLS session instead of on data connections of its own "+
		"(slower: the bytes cross tftunnel's and the router's memory; see README \"Data connections\") (env TRC_DATA_IN_TLS, any value)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *showVersion {
		fmt.Println("tftunnel", version)
		os.Exit(0)
	}
	if len(o.remotes) == 0 {
		if err := o.remotes.Set(getenv("TRC_REMOTE")); err != nil {
			return o, err
		}
	}
	if o.localTLS == "" {
		o.localTLS = o.local
	}
	o.backoff = time.Duration(backoffSeconds) * time.Second
	if *pin != "" {
		sum, err := parsePin(*pin)
		if err != nil {
			return o, err
		}
		o.pin = sum
	}
	switch {
	case o.secret == "":
		return o, errors.New("--secret is required")
	case len(o.secret) > maxSecretLen:
		return o, fmt.Errorf("--secret is %d bytes; at most %d fit in the handshake", len(o.secret), maxSecretLen)
	case len(o.remotes) == 0:
		return o, errors.New("--remote is required")
	case o.local == "":
		return o, errors.New("--local is required")
	case backoffSeconds < 1:
		return o, errors.New("--backoff must be at least 1 second")
	case o.dataInTLS && o.pin == nil:
		return o, errors.New("--data-in-tls needs --pin: without it there is no TLS session (the legacy protocol carries every connection in the clear)")
	}
	return o, nil
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "tftunnel:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go trimMemory(ctx)
	var wg sync.WaitGroup
	for _, remote := range opts.remotes {
		t := &tunnel{remote: remote, secret: opts.secret, local: opts.local, localTLS: opts.localTLS, backoff: opts.backoff, pin: opts.pin, dataInTLS: opts.dataInTLS, log: log.With("remote", remote)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.run(ctx)
		}()
	}
	wg.Wait()
}
