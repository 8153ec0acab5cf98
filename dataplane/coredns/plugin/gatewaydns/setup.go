package gatewaydns

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

func init() { plugin.Register(pluginName, setup) }

// config is the parsed gatewaydns block.
type config struct {
	network       string // "tcp" or "unix"
	addr          string
	password      string
	passwordFrom  string // "password" or "password_file PATH": which option set it
	db            int
	nameservers   []string
	hostmaster    string
	ttl           uint32
	resync        time.Duration
	maxRecords    int
	maxValueBytes int
	maxFields     int           // a zone hash with more fields is not loaded
	coalesce      time.Duration // minimum pause between two reloads of one zone; 0 = none
	transferAll   bool
	transferTo    []*net.IPNet
	startupWait   time.Duration
}

func defaultConfig() *config {
	return &config{
		network:       "tcp",
		addr:          "127.0.0.1:6379",
		ttl:           300,
		resync:        60 * time.Second,
		maxRecords:    200000,
		maxValueBytes: 64 * 1024,
		maxFields:     100000,
		coalesce:      25 * time.Millisecond,
		startupWait:   3 * time.Second,
	}
}

func (c *config) zoneDefaults() zoneDefaults {
	return zoneDefaults{nameservers: c.nameservers, hostmaster: c.hostmaster, ttl: c.ttl}
}

func (c *config) limits() zoneLimits {
	return zoneLimits{maxRecords: c.maxRecords, maxValueBytes: c.maxValueBytes}
}

func setup(c *caddy.Controller) error {
	cfg, err := parseConfig(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	g := &GatewayDNS{transferAll: cfg.transferAll, transferTo: cfg.transferTo}
	s := newSyncer(cfg, g)
	ctx, cancel := context.WithCancel(context.Background())
	var stop func()

	c.OnStartup(func() error {
		// A wrong password is a configuration mistake: refuse to start rather than answer
		// SERVFAIL forever. A redis that is not up yet is waited for.
		if err := s.checkAuth(ctx); err != nil {
			cancel()
			return plugin.Error(pluginName, err)
		}
		wg := s.run(ctx)
		stop = func() { cancel(); wg.Wait() }
		// Give the first load a moment so a fresh server answers from the start; if redis is
		// not there yet, serve SERVFAIL (ready reports not ready) until it is.
		select {
		case <-s.loadedOnce:
		case <-time.After(cfg.startupWait):
			log.Warningf("no full load from redis at %s after %s; answering SERVFAIL until it succeeds",
				cfg.addr, cfg.startupWait)
		}
		return nil
	})
	c.OnShutdown(func() error {
		if stop != nil {
			stop()
		} else {
			cancel()
		}
		return s.client.Close()
	})

	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		g.Next = next
		return g
	})
	return nil
}

// parseConfig reads the gatewaydns stanza of a server block. Every mistake is an error
// naming the option.
func parseConfig(c *caddy.Controller) (*config, error) {
	var cfg *config
	for c.Next() {
		if cfg != nil {
			return nil, c.Err("gatewaydns may appear only once per server block")
		}
		var err error
		if cfg, err = parseStanza(c); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// parseStanza reads `gatewaydns { ... }`: no arguments, then the block.
func parseStanza(c *caddy.Controller) (*config, error) {
	cfg := defaultConfig()
	if args := c.RemainingArgs(); len(args) > 0 {
		return nil, c.Errf("gatewaydns takes no arguments (it serves every zone found in redis), got %q", args)
	}
	for c.NextBlock() {
		opt := c.Val()
		if err := parseBlock(cfg, opt, c.RemainingArgs()); err != nil {
			return nil, c.Errf("%s: %v", opt, err)
		}
	}
	return cfg, nil
}

// directiveParsers maps each option to the function that applies its arguments.
var directiveParsers = map[string]func(*config, []string) error{
	"address":              parseAddress,
	"unix":                 parseUnix,
	"password":             parsePassword,
	"password_file":        parsePasswordFile,
	"db":                   parseDB,
	"nameservers":          parseNameservers,
	"hostmaster":           parseHostmaster,
	"ttl":                  parseTTL,
	"resync":               parseResync,
	"max_records_per_zone": parseMaxRecords,
	"max_value_bytes":      parseMaxValueBytes,
	"max_fields_per_zone":  parseMaxFields,
	"coalesce":             parseCoalesce,
	"transfer":             parseTransfer,
}

// directiveNames lists the options in the order the README documents them.
var directiveNames = []string{"address", "unix", "password", "password_file", "db", "nameservers", "hostmaster", "ttl",
	"resync", "max_records_per_zone", "max_value_bytes", "max_fields_per_zone", "coalesce", "transfer"}

// parseBlock applies one option of the block.
func parseBlock(cfg *config, opt string, args []string) error {
	parse, ok := directiveParsers[opt]
	if !ok {
		return fmt.Errorf("unknown option (known: %s)", strings.Join(directiveNames, ", "))
	}
	return parse(cfg, args)
}

// oneArg returns the single value of an option.
func oneArg(args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("expects exactly one value, got %d", len(args))
	}
	return args[0], nil
}

// positiveArg returns the single value of an option as a whole number in [1, max].
func positiveArg(args []string, max int) (int, error) {
	v, err := oneArg(args)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("%q is not a whole number between 1 and %d", v, max)
	}
	return n, nil
}

func parseAddress(cfg *config, args []string) error {
	v, err := oneArg(args)
	if err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return fmt.Errorf("%q is not HOST:PORT (use `unix PATH` for a socket)", v)
	}
	cfg.network, cfg.addr = "tcp", v
	return nil
}

func parseUnix(cfg *config, args []string) error {
	v, err := oneArg(args)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("%q is not an absolute socket path", v)
	}
	cfg.network, cfg.addr = "unix", v
	return nil
}

func parsePassword(cfg *config, args []string) error {
	v, err := oneArg(args)
	if err != nil {
		return err
	}
	return setPassword(cfg, v, "password") // {$ENV} is expanded by the Corefile parser
}

// parsePasswordFile reads the redis password from a file at start (a systemd credential,
// so that it is never on a command line, in the environment or in the Nix store). One
// trailing newline is not part of the password.
func parsePasswordFile(cfg *config, args []string) error {
	path, err := oneArg(args)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read the redis password: %v", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if pw == "" {
		return fmt.Errorf("%s is empty: no redis password in it", path)
	}
	return setPassword(cfg, pw, "password_file "+path)
}

func setPassword(cfg *config, pw, from string) error {
	if cfg.passwordFrom != "" {
		return fmt.Errorf("the redis password is already set by %s; use either password or password_file", cfg.passwordFrom)
	}
	cfg.password, cfg.passwordFrom = pw, from
	return nil
}

func parseDB(cfg *config, args []string) error {
	v, err := oneArg(args)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1<<20 {
		return fmt.Errorf("%q is not a redis database number", v)
	}
	cfg.db = n
	return nil
}

// hostName makes a configured name absolute and lowercase; wildcards and the root are refused.
func hostName(v string) (string, bool) {
	n := dns.Fqdn(strings.ToLower(v))
	return n, validName(n) && n != "." && !strings.Contains(n, "*")
}

func parseNameservers(cfg *config, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("expects at least one name server")
	}
	cfg.nameservers = nil
	for _, a := range args {
		n, ok := hostName(a)
		if !ok {
			return fmt.Errorf("%q is not a host name", a)
		}
		cfg.nameservers = append(cfg.nameservers, n)
	}
	return nil
}

func parseHostmaster(cfg *config, args []string) error {
	v, err := oneArg(args)
	if err != nil {
		return err
	}
	// An address like hostmaster@example.com is accepted and written as a DNS mailbox.
	n, ok := hostName(strings.Replace(v, "@", ".", 1))
	if !ok {
		return fmt.Errorf("%q is not a mailbox name such as hostmaster.example.com.", v)
	}
	cfg.hostmaster = n
	return nil
}

func parseTTL(cfg *config, args []string) error {
	n, err := positiveArg(args, 604800)
	if err == nil {
		cfg.ttl = uint32(n)
	}
	return err
}

func parseResync(cfg *config, args []string) error {
	v, err := oneArg(args)
	if err != nil {
		return err
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 100*time.Millisecond {
		return fmt.Errorf("%q is not a duration of at least 100ms", v)
	}
	cfg.resync = d
	return nil
}

// limitParser parses a whole-number limit in [1, max] into the field *at returns.
func limitParser(max int, at func(*config) *int) func(*config, []string) error {
	return func(cfg *config, args []string) error {
		n, err := positiveArg(args, max)
		if err == nil {
			*at(cfg) = n
		}
		return err
	}
}

var (
	parseMaxRecords    = limitParser(10_000_000, func(c *config) *int { return &c.maxRecords })
	parseMaxValueBytes = limitParser(512*1024*1024, func(c *config) *int { return &c.maxValueBytes })
	parseMaxFields     = limitParser(100_000_000, func(c *config) *int { return &c.maxFields })
)

func parseCoalesce(cfg *config, args []string) error {
	v, err := oneArg(args)
	if err != nil {
		return err
	}
	d, err := time.ParseDuration(v)
	if v == "off" {
		d, err = 0, nil
	}
	if err != nil || d < 0 || d > 10*time.Second {
		return fmt.Errorf("%q is not a duration between 0 and 10s (0 or off: no pacing)", v)
	}
	cfg.coalesce = d
	return nil
}

// parseTransfer reads `transfer to * | ADDRESS|CIDR ...`; a bare address is a host prefix.
func parseTransfer(cfg *config, args []string) error {
	if len(args) < 2 || args[0] != "to" {
		return fmt.Errorf("expects `transfer to * | ADDRESS|CIDR ...`")
	}
	for _, a := range args[1:] {
		if a == "*" {
			cfg.transferAll = true
			continue
		}
		n, err := transferNet(a)
		if err != nil {
			return err
		}
		cfg.transferTo = append(cfg.transferTo, n)
	}
	return nil
}

func transferNet(a string) (*net.IPNet, error) {
	if !strings.Contains(a, "/") {
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", a)
		}
		bits := 32
		if ip.To4() == nil {
			bits = 128
		}
		a = fmt.Sprintf("%s/%d", a, bits)
	}
	_, n, err := net.ParseCIDR(a)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IP address or CIDR", a)
	}
	return n, nil
}
