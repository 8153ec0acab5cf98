// Package router is tfrouter: trs's three listeners (TLS by SNI, HTTP by Host, trc tunnel
// clients) with bounded peeks, an in-memory route table fed by redis, a concurrency-safe
// tunnel registry and accept loops that never give up on transient errors.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"tfgateway.dev/dataplane/router/internal/config"
	"tfgateway.dev/dataplane/router/internal/persource"
	"tfgateway.dev/dataplane/router/internal/redisfeed"
	"tfgateway.dev/dataplane/router/internal/routes"
	"tfgateway.dev/dataplane/router/internal/tunnel"
)

// Options tune limits and timeouts; zero values take the defaults below.
type Options struct {
	HeaderLimit      int           // max bytes of HTTP head or TLS ClientHello
	PeekTimeout      time.Duration // time a client has to send that head
	DialTimeout      time.Duration // backend dial
	HandshakeTimeout time.Duration // trc handshake
	MaxSecret        int           // bytes
	ShutdownGrace    time.Duration // how long shutdown waits for live connections
	// MaxPending bounds connections still sending their HTTP head or ClientHello; above it
	// new ones are closed at once, so a slowloris flood cannot pin unbounded memory.
	MaxPending int
	// PendingPerSource and ConnsPerSource are each source's share on ports 80 and 443: its
	// connections still peeking, and all its open connections. A source is an IPv4 address
	// or an IPv6 prefix of IPv6SourcePrefix bits (64). Over a share a new connection is reset
	// at once, counted, and summarised in the log at most once per SummaryEvery.
	PendingPerSource int
	ConnsPerSource   int
	IPv6SourcePrefix int
	SummaryEvery     time.Duration
	Tunnel           tunnel.Limits
	// TunnelIdentity is the key of authenticated tunnels (nil: off); RefuseLegacyTunnels
	// refuses trc's clear-text handshake; TunnelSources limits each source address on the
	// tunnel port.
	TunnelIdentity      *tunnel.Identity
	RefuseLegacyTunnels bool
	TunnelSources       tunnel.SourceLimits
	// TunnelMaxPending bounds the tunnel port's connections in their handshake over all
	// sources (DefaultTunnelMaxPending; negative: unlimited).
	TunnelMaxPending int
	// NoDataConnections stops offering authenticated clients data connections (protocol
	// 2, tunnel/dataconn.go); TicketTTL is how long a ticket waits for its data connection
	// (tunnel.TicketTTL) and PendingTickets the most tickets one tunnel has waiting
	// (tunnel.DefaultPendingTickets).
	NoDataConnections bool
	TicketTTL         time.Duration
	PendingTickets    int
	// RefusalSummaryInterval is how often refused handshakes are summarised in the log
	// (default 30 s).
	RefusalSummaryInterval time.Duration
	Log                    *slog.Logger
	// TargetPolicy refuses direct targets from redis; routes.CheckTarget when nil. Tests
	// replace it to reach backends on loopback.
	TargetPolicy routes.TargetPolicy
}

// Defaults of the per-tunnel limits ([tunnels] in router.toml, -tunnel-streams and
// -tunnel-memory-mib): 1,024 streams of at least 256 KiB of receive window each (256 MiB),
// plus 128 MiB into which the windows of bulk transfers grow (16 streams at the full 8 MiB).
//
// Over all tunnels ([tunnels] max_tunnels, total_streams, total_memory_mib), whatever the
// number of tunnels times memory_mib: at most 10,000 tunnels (and only secrets that live
// routes reference register at all), 6,144 streams and 2 GiB of stream receive windows
// (6,144 minimum windows are 1.5 GiB; the other 512 MiB is where windows of bulk transfers
// grow).
const (
	DefaultTunnelStreams        = 1024
	DefaultTunnelMemoryMiB      = 384
	DefaultMaxTunnels           = 10000
	DefaultTunnelTotalStreams   = 6144
	DefaultTunnelTotalMemoryMiB = 2048
	// DefaultTunnelMaxPending: handshakes in progress on the tunnel port over all sources;
	// 16 sources at their pending_per_source share (512) fill it.
	DefaultTunnelMaxPending = 8192
)

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	defi(&o.HeaderLimit, 16*1024)
	def(&o.PeekTimeout, 10*time.Second)
	def(&o.DialTimeout, 5*time.Second)
	def(&o.HandshakeTimeout, 10*time.Second)
	defi(&o.MaxSecret, 4096)
	def(&o.ShutdownGrace, 10*time.Second)
	defi(&o.MaxPending, 20000)
	defi(&o.PendingPerSource, 256)
	defi(&o.ConnsPerSource, 2048)
	defi(&o.IPv6SourcePrefix, 64)
	def(&o.SummaryEvery, time.Minute)
	defi(&o.Tunnel.MaxTunnels, DefaultMaxTunnels)
	defi(&o.TunnelSources.HandshakesPerMinute, tunnel.DefaultHandshakesPerMinute)
	defi(&o.TunnelSources.HandshakeBurst, tunnel.DefaultHandshakeBurst)
	defi(&o.TunnelSources.MaxConnsPerSource, tunnel.DefaultMaxConnsPerSource)
	defi(&o.TunnelSources.MaxSources, tunnel.DefaultMaxSources)
	defi(&o.TunnelSources.MaxPendingPerSource, tunnel.DefaultMaxPendingPerSource)
	defi(&o.TunnelMaxPending, DefaultTunnelMaxPending)
	def(&o.RefusalSummaryInterval, 30*time.Second)
	defi(&o.Tunnel.MaxStreamsPerTunnel, DefaultTunnelStreams)
	defi(&o.Tunnel.TunnelMemory, DefaultTunnelMemoryMiB<<20)
	defi(&o.Tunnel.MaxStreams, DefaultTunnelTotalStreams)
	defi(&o.Tunnel.TotalMemory, DefaultTunnelTotalMemoryMiB<<20)
	def(&o.Tunnel.OpenTimeout, 5*time.Second)
	def(&o.TicketTTL, tunnel.TicketTTL)
	defi(&o.PendingTickets, tunnel.DefaultPendingTickets)
	if o.TargetPolicy == nil {
		o.TargetPolicy = routes.CheckTarget
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// ListenError is returned when a listener cannot be opened.
type ListenError struct {
	Listener string
	Addr     string
	Err      error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("listen %s on %s: %v", e.Listener, e.Addr, e.Err)
}
func (e *ListenError) Unwrap() error { return e.Err }

// Listener names (metric labels).
const (
	ListenerTLS    = "tls"
	ListenerHTTP   = "http"
	ListenerClient = "clients"
)

// Router is one running tfrouter.
type Router struct {
	cfg      *config.Config
	opt      Options
	log      *slog.Logger
	Table    *routes.Table
	Registry *tunnel.Registry
	// Tickets match data connections to public connections; nil when they are off.
	Tickets *tunnel.Tickets
	// acceptor serves the tunnel port (set by Run).
	acceptor atomic.Pointer[tunnel.Acceptor]
	Metrics  *Metrics
	redis    *redis.Client
	term     *terminator

	mu        sync.Mutex
	listeners map[string]net.Listener
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
	ready     chan struct{}
	pending   chan struct{} // slots for connections in the peek phase
	sources   *persource.Table
}

// New builds a router from a parsed router.toml.
func New(cfg *config.Config, opt Options) *Router {
	if opt.Tunnel.MaxStreamsPerTunnel == 0 {
		opt.Tunnel.MaxStreamsPerTunnel = cfg.Tunnels.MaxStreams
	}
	if opt.Tunnel.TunnelMemory == 0 {
		opt.Tunnel.TunnelMemory = cfg.Tunnels.MemoryMiB << 20
	}
	if opt.Tunnel.MaxTunnels == 0 {
		opt.Tunnel.MaxTunnels = cfg.Tunnels.MaxTunnels
	}
	if opt.Tunnel.MaxStreams == 0 {
		opt.Tunnel.MaxStreams = cfg.Tunnels.TotalStreams
	}
	if opt.Tunnel.TotalMemory == 0 {
		opt.Tunnel.TotalMemory = cfg.Tunnels.TotalMemoryMiB << 20
	}
	opt.defaults()
	static := map[string]routes.Service{}
	for name, s := range cfg.Server.Services {
		term, _ := routes.ParseTermination(s.Terminate) // config.Parse refused bad values
		static[name] = routes.Service{Addr: s.Addr, TLSPort: s.TLSPort, HTTPPort: s.HTTPPort, ClientSecret: s.ClientSecret,
			Terminate: term, Redirect: s.Redirect, ProxyProtocol: uint8(s.ProxyProtocol)}
	}
	r := &Router{
		cfg:       cfg,
		opt:       opt,
		log:       opt.Log,
		Table:     routes.NewTable(static, config.CatchAll),
		Registry:  tunnel.NewRegistry(opt.Tunnel),
		Metrics:   newMetrics(),
		listeners: map[string]net.Listener{},
		conns:     map[net.Conn]struct{}{},
		ready:     make(chan struct{}),
		pending:   make(chan struct{}, opt.MaxPending),
		sources: persource.New(persource.Limits{Pending: opt.PendingPerSource, Conns: opt.ConnsPerSource,
			IPv6Prefix: opt.IPv6SourcePrefix}),
	}
	r.Metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tfrouter_sources", Help: "Sources (IPv4 addresses, IPv6 prefixes) with a connection open on ports 80 and 443.",
	}, func() float64 { return float64(r.sources.Len()) }))
	r.Registry.OnChange = func(n int) { r.Metrics.TunnelsActive.Set(float64(n)) }
	r.Metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tfrouter_tunnel_handshakes_pending", Help: "Connections on the tunnel port still in their handshake (bounded by [tunnels] max_pending).",
	}, func() float64 { return float64(r.tunnelPending()) }))
	r.Table.OnRevoke = r.revoke
	if opt.TunnelIdentity != nil && !opt.NoDataConnections {
		r.Tickets = &tunnel.Tickets{PerTunnel: opt.PendingTickets, TTL: opt.TicketTTL}
		r.Metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tfrouter_tunnel_tickets_pending", Help: "Public connections waiting for their tunnel data connection.",
		}, func() float64 { return float64(r.Tickets.Pending()) }))
	}
	return r
}

// Ready is closed once every listener is open.
func (r *Router) Ready() <-chan struct{} { return r.ready }

// Addr returns the bound address of a listener (useful with port 0 in tests).
func (r *Router) Addr(name string) net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.listeners[name]; ok {
		return l.Addr()
	}
	return nil
}

// Run opens the listeners and serves until ctx ends, then shuts down gracefully. A redis
// that answers but refuses the router's credentials is a configuration mistake: Run returns
// an *AuthError at once instead of serving without routes.
func (r *Router) Run(ctx context.Context) error {
	s := r.cfg.Server
	if s.DBBackend.Type == "redis" {
		r.redis = newRedisClient(s.DBBackend)
		if err := checkAuth(ctx, r.redis, s.DBBackend); err != nil {
			_ = r.redis.Close()
			return err
		}
		r.publishPin(ctx)
	}
	for _, l := range []struct {
		name string
		port uint16
	}{{ListenerTLS, s.Port}, {ListenerHTTP, s.HTTPPort}, {ListenerClient, s.ClientsPort}} {
		addr := net.JoinHostPort(s.Addr, strconv.Itoa(int(l.port)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			r.closeListeners()
			if r.redis != nil {
				_ = r.redis.Close()
			}
			return &ListenError{Listener: l.name, Addr: addr, Err: err}
		}
		r.mu.Lock()
		r.listeners[l.name] = ln
		r.mu.Unlock()
		r.log.Info("listening", "listener", l.name, "addr", ln.Addr().String())
	}
	feedCtx, stopFeed := context.WithCancel(context.Background())
	defer stopFeed()
	go r.Registry.Trim(feedCtx)
	if s.DBBackend.Type == "redis" {
		synced := r.startFeed(feedCtx, s.DBBackend)
		// Unlike trs (a GET per connection) routes come from memory, so hold the first
		// connections in the listen backlog until the table is loaded (bounded: a dead
		// redis must not keep static routes and tunnels down).
		select {
		case <-synced:
		case <-time.After(firstSyncWait):
			r.log.Warn("redis not synced yet; serving static routes meanwhile", "waited", firstSyncWait.String())
		case <-ctx.Done():
		}
	}
	if err := r.startTLS(); err != nil {
		r.closeListeners()
		return err
	}
	clientLog := r.log.With("listener", ListenerClient)
	refusals := &tunnel.Refusals{Log: clientLog, Interval: r.opt.RefusalSummaryInterval}
	refusalsCtx, stopRefusals := context.WithCancel(context.Background())
	refusalsDone := make(chan struct{})
	go func() { defer close(refusalsDone); refusals.Run(refusalsCtx) }()
	acceptor := &tunnel.Acceptor{
		Registry: r.Registry, HandshakeTimeout: r.opt.HandshakeTimeout, MaxSecret: r.opt.MaxSecret,
		Log: clientLog, Routes: r.Table, Identity: r.opt.TunnelIdentity, RefuseLegacy: r.opt.RefuseLegacyTunnels,
		Sources: tunnel.NewSources(sourceLimits(r.opt.TunnelSources)), MaxPending: max(r.opt.TunnelMaxPending, 0), Refusals: refusals,
		OnRegister: func(s *tunnel.Session) {
			r.Metrics.Registrations.WithLabelValues(registeredResult(s)).Inc()
		},
		OnReject:   func(reason string) { r.Metrics.Registrations.WithLabelValues(reason).Inc() },
		OnDataConn: func(result string) { r.Metrics.DataConns.WithLabelValues(result).Inc() },
	}
	if r.Tickets != nil {
		acceptor.Tickets = r.Tickets
	}
	r.acceptor.Store(acceptor)
	clientLog.Info("tunnel protocols", "legacy", !r.opt.RefuseLegacyTunnels, "authenticated", r.opt.TunnelIdentity != nil,
		"data_connections", r.Tickets != nil)
	var loops sync.WaitGroup
	for name, handle := range map[string]func(net.Conn){
		ListenerTLS:    func(c net.Conn) { r.serve(ListenerTLS, c, r.handleTLS) },
		ListenerHTTP:   func(c net.Conn) { r.serve(ListenerHTTP, c, r.handleHTTP) },
		ListenerClient: acceptor.Handle,
	} {
		ln := r.listeners[name]
		loops.Add(1)
		go func() {
			defer loops.Done()
			r.acceptLoop(ctx, name, ln, handle)
		}()
	}
	go r.summarise(ctx)
	close(r.ready)
	<-ctx.Done()
	r.log.Info("shutting down", "grace", r.opt.ShutdownGrace.String())
	r.closeListeners()
	loops.Wait()
	r.quiesceTLS()
	r.drain()
	r.stopTLS()
	r.Registry.CloseAll()
	stopRefusals()
	<-refusalsDone
	stopFeed()
	if r.redis != nil {
		_ = r.redis.Close()
	}
	return nil
}

// tunnelPending is the number of tunnel-port connections in their handshake.
func (r *Router) tunnelPending() int {
	if a := r.acceptor.Load(); a != nil {
		return a.Pending()
	}
	return 0
}

// revoke ends what the route table no longer allows (routes.Table.OnRevoke): the tunnel of
// a secret no route references is closed (its streams reset, its client sees the
// connection end and, reconnecting, a refusal), and the streams a route still had on a
// tunnel that keeps other routes are reset. One log line per tunnel closed (route changes
// come from the operator's redis, not from the Internet).
func (r *Router) revoke(ended []routes.Revoked) {
	for _, e := range ended {
		if e.SecretGone {
			if r.Registry.CloseSecret(e.Secret) {
				r.Metrics.Revocations.WithLabelValues("tunnel").Inc()
				r.log.Info("tunnel closed: no route references its secret any more", "listener", ListenerClient,
					"tunnel", tunnel.Label(e.Secret), "route", e.Host)
			}
			continue
		}
		if n := r.Registry.RevokeRoute(e.Secret, e.Host); n > 0 {
			r.Metrics.Revocations.WithLabelValues("stream").Add(float64(n))
		}
	}
}

// firstSyncWait bounds how long Run waits for the first route resync before accepting.
const firstSyncWait = 5 * time.Second

func (r *Router) startFeed(ctx context.Context, db config.DBBackend) <-chan struct{} {
	synced := make(chan struct{})
	var once sync.Once
	feed := &redisfeed.Feed{
		Client: r.redis, Table: r.Table, Resync: db.ResyncPeriod(), Log: r.log.With("component", "redis"),
		Check: r.opt.TargetPolicy,
		OnResync: func(n int, err error) {
			if err != nil {
				r.Metrics.Resyncs.WithLabelValues("error").Inc()
				return
			}
			r.Metrics.Resyncs.WithLabelValues("ok").Inc()
			r.Metrics.Routes.Set(float64(r.Table.Len()))
			once.Do(func() { close(synced) })
		},
		OnUpdate: func(string, bool) { r.Metrics.Routes.Set(float64(r.Table.Len())) },
	}
	go feed.Run(ctx)
	return synced
}

func newRedisClient(db config.DBBackend) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         net.JoinHostPort(db.Addr, strconv.Itoa(int(db.Port))),
		Username:     db.Username,
		Password:     db.Password,
		DialTimeout:  5 * time.Second,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		MaxRetries:   1,
	})
}

// AuthError: redis refused the router's credentials (or wants some and none are configured).
type AuthError struct {
	Addr        string
	HasPassword bool
	Err         error
}

func (e *AuthError) Error() string {
	if !e.HasPassword {
		return fmt.Sprintf("redis at %s wants a password and none is configured ([server.dbbackend] password or passwordfile): %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("redis at %s refuses the configured password: %v", e.Addr, e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// authCheckWait bounds the start-up check; a redis that does not answer in time is waited
// for by the feed as before (static routes and tunnels are served meanwhile).
const authCheckWait = 3 * time.Second

// checkAuth fails only when redis answers and refuses the credentials.
func checkAuth(ctx context.Context, c *redis.Client, db config.DBBackend) error {
	ctx, cancel := context.WithTimeout(ctx, authCheckWait)
	defer cancel()
	err := c.Ping(ctx).Err()
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, refusal := range []string{"NOAUTH", "WRONGPASS", "invalid password", "invalid username-password", "AUTH failed"} {
		if strings.Contains(msg, refusal) {
			return &AuthError{Addr: c.Options().Addr, HasPassword: db.Password != "", Err: err}
		}
	}
	return nil
}

func (r *Router) closeListeners() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.listeners {
		_ = l.Close()
	}
}

// drain waits for live connections up to the grace period, then closes the rest.
func (r *Router) drain() {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(r.opt.ShutdownGrace):
	}
	r.mu.Lock()
	n := len(r.conns)
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.log.Warn("grace period over; closed remaining connections", "count", n)
	<-done
}

// acceptLoop never returns on a transient error (EMFILE, ENFILE, ECONNABORTED, ...): it
// logs, counts, backs off up to 1 s and keeps accepting. Only a closed listener ends it.
func (r *Router) acceptLoop(ctx context.Context, name string, ln net.Listener, handle func(net.Conn)) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			r.Metrics.AcceptErrors.WithLabelValues(name).Inc()
			r.log.Warn("accept failed; backing off", "listener", name, "err", err, "delay", delay.String())
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			continue
		}
		delay = 0
		go handle(c)
	}
}

// serve admits a public connection within its source's share, and tracks it for graceful
// shutdown and metrics.
func (r *Router) serve(listener string, c net.Conn, h func(net.Conn, *persource.Ticket)) {
	k, why := r.sources.Admit(c.RemoteAddr())
	if why != persource.Admitted {
		r.refuse(listener, c, why.String())
		return
	}
	defer k.Close()
	r.mu.Lock()
	r.conns[c] = struct{}{}
	r.wg.Add(1)
	r.mu.Unlock()
	g := r.Metrics.Active.WithLabelValues(listener)
	g.Inc()
	defer func() {
		g.Dec()
		_ = c.Close()
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		r.wg.Done()
	}()
	h(c, k)
}

// refuse resets a connection the router will not serve (no FIN handshake, no TIME_WAIT left
// behind), counted by kind and never logged one by one.
// It is counted before the reset, so whoever saw the reset sees the count.
func (r *Router) refuse(listener string, c net.Conn, kind string) {
	r.fail(listener, NoRoute, kind)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// summarise logs, at most once per SummaryEvery, how many connections were refused over the
// per-source shares and which source was refused most.
func (r *Router) summarise(ctx context.Context) {
	t := time.NewTicker(r.opt.SummaryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := r.sources.TakeSummary()
		if s.Pending+s.Conns == 0 {
			continue
		}
		args := []any{"pending_per_source", s.Pending, "connections_per_source", s.Conns,
			"sources_connected", s.Sources, "period", r.opt.SummaryEvery.String()}
		if s.TopRefused > 0 {
			args = append(args, "top_source", s.Top.String(), "top_source_refused", s.TopRefused)
		}
		r.log.Warn("refused connections over per-source limits", args...)
	}
}

// sourceLimits turns the options' "negative: unlimited" into the table's "0: unlimited".
func sourceLimits(l tunnel.SourceLimits) tunnel.SourceLimits {
	for _, v := range []*int{&l.HandshakesPerMinute, &l.MaxConnsPerSource, &l.MaxPendingPerSource} {
		if *v < 0 {
			*v = 0
		}
	}
	return l
}

func registeredResult(s *tunnel.Session) string {
	if s.Authenticated {
		return "ok_authenticated"
	}
	return "ok"
}

// PinKey is the redis key where the router publishes its tunnel pin, for `tfgateway
// status` and the operator to hand to users (tftunnel --pin).
const PinKey = "tfgateway:router:tunnel-pin"

func (r *Router) publishPin(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, authCheckWait)
	defer cancel()
	var err error
	if r.opt.TunnelIdentity != nil {
		err = r.redis.Set(ctx, PinKey, r.opt.TunnelIdentity.Pin, 0).Err()
	} else {
		err = r.redis.Del(ctx, PinKey).Err()
	}
	if err != nil {
		r.log.Warn("cannot publish the tunnel pin in redis", "key", PinKey, "err", err)
	}
}
