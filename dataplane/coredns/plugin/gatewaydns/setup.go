package gatewaydns

import (
	"context"
	"fmt"
	"net"
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
		maxRecords:    20000,
		maxValueBytes: 64 * 1024,
		maxFields:     50000,
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

// parseConfig reads one gatewaydns block. Every mistake is an error naming the option.
func parseConfig(c *caddy.Controller) (*config, error) {
	cfg := defaultConfig()
	seen := false
	for c.Next() {
		if seen {
			return nil, c.Err("gatewaydns may appear only once per server block")
		}
		seen = true
		if args := c.RemainingArgs(); len(args) > 0 {
			return nil, c.Errf("gatewaydns takes no arguments (it serves every zone found in redis), got %q", args)
		}
		for c.NextBlock() {
			opt := c.Val()
			args := c.RemainingArgs()
			if err := cfg.apply(opt, args); err != nil {
				return nil, c.Errf("%s: %v", opt, err)
			}
		}
	}
	return cfg, nil
}

func (cfg *config) apply(opt string, args []string) error {
	one := func() (string, error) {
		if len(args) != 1 {
			return "", fmt.Errorf("expects exactly one value, got %d", len(args))
		}
		return args[0], nil
	}
	positive := func(max int) (int, error) {
		v, err := one()
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > max {
			return 0, fmt.Errorf("%q is not a whole number between 1 and %d", v, max)
		}
		return n, nil
	}
	switch opt {
	case "address":
		v, err := one()
		if err != nil {
			return err
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			return fmt.Errorf("%q is not HOST:PORT (use `unix PATH` for a socket)", v)
		}
		cfg.network, cfg.addr = "tcp", v
	case "unix":
		v, err := one()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(v, "/") {
			return fmt.Errorf("%q is not an absolute socket path", v)
		}
		cfg.network, cfg.addr = "unix", v
	case "password":
		v, err := one()
		if err != nil {
			return err
		}
		cfg.password = v // {$ENV} is expanded by the Corefile parser
	case "db":
		v, err := one()
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1<<20 {
			return fmt.Errorf("%q is not a redis database number", v)
		}
		cfg.db = n
	case "nameservers":
		if len(args) == 0 {
			return fmt.Errorf("expects at least one name server")
		}
		cfg.nameservers = nil
		for _, a := range args {
			n := dns.Fqdn(strings.ToLower(a))
			if !validName(n) || n == "." || strings.Contains(n, "*") {
				return fmt.Errorf("%q is not a host name", a)
			}
			cfg.nameservers = append(cfg.nameservers, n)
		}
	case "hostmaster":
		v, err := one()
		if err != nil {
			return err
		}
		// An address like hostmaster@example.com is accepted and written as a DNS mailbox.
		v = strings.Replace(v, "@", ".", 1)
		n := dns.Fqdn(strings.ToLower(v))
		if !validName(n) || n == "." || strings.Contains(n, "*") {
			return fmt.Errorf("%q is not a mailbox name such as hostmaster.example.com.", args[0])
		}
		cfg.hostmaster = n
	case "ttl":
		n, err := positive(604800)
		if err != nil {
			return err
		}
		cfg.ttl = uint32(n)
	case "resync":
		v, err := one()
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 100*time.Millisecond {
			return fmt.Errorf("%q is not a duration of at least 100ms", v)
		}
		cfg.resync = d
	case "max_records_per_zone":
		n, err := positive(10_000_000)
		if err != nil {
			return err
		}
		cfg.maxRecords = n
	case "max_value_bytes":
		n, err := positive(512 * 1024 * 1024)
		if err != nil {
			return err
		}
		cfg.maxValueBytes = n
	case "max_fields_per_zone":
		n, err := positive(100_000_000)
		if err != nil {
			return err
		}
		cfg.maxFields = n
	case "coalesce":
		v, err := one()
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
	case "transfer":
		if len(args) < 2 || args[0] != "to" {
			return fmt.Errorf("expects `transfer to * | ADDRESS|CIDR ...`")
		}
		for _, a := range args[1:] {
			if a == "*" {
				cfg.transferAll = true
				continue
			}
			if !strings.Contains(a, "/") {
				ip := net.ParseIP(a)
				if ip == nil {
					return fmt.Errorf("%q is not an IP address or CIDR", a)
				}
				bits := 32
				if ip.To4() == nil {
					bits = 128
				}
				a = fmt.Sprintf("%s/%d", a, bits)
			}
			_, n, err := net.ParseCIDR(a)
			if err != nil {
				return fmt.Errorf("%q is not an IP address or CIDR", a)
			}
			cfg.transferTo = append(cfg.transferTo, n)
		}
	default:
		return fmt.Errorf("unknown option (known: address, unix, password, db, nameservers, hostmaster, " +
			"ttl, resync, max_records_per_zone, max_value_bytes, max_fields_per_zone, coalesce, transfer)")
	}
	return nil
}
