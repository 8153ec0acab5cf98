// Package config reads trs's router.toml (tcprouter v0.1.0) so an operator's existing file
// works unchanged with tfrouter. Keys trs ignores are accepted; a few get a meaning here
// (password or passwordfile and username authenticate to redis, refresh is the resync period).
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"tfgateway.dev/dataplane/router/internal/routes"
)

// CatchAll is the static service name trs uses when no other route matches.
const CatchAll = "CATCH_ALL"

// Config mirrors trs's router.toml, plus tfrouter's optional [tls] table.
type Config struct {
	Server Server `toml:"server"`
	// TLS configures termination (certificates, ACME); nil when the file has no [tls].
	TLS *TLS `toml:"tls"`
	// Tunnels configures the tunnel port's protocols, per-source limits and per-tunnel
	// stream limits ([tunnels]).
	Tunnels Tunnels `toml:"tunnels"`
	// Limits are tfrouter's limits on the public ports (80, 443); absent keys take defaults.
	Limits Limits `toml:"limits"`
}

// Limits is tfrouter's optional [limits] table; zero (absent) means the router's default.
type Limits struct {
	// MaxPending bounds connections still sending their HTTP head or ClientHello, over all
	// sources (the backstop).
	MaxPending int `toml:"max_pending"`
	// PendingPerSource bounds those of one source (IPv4 address or IPv6 prefix).
	PendingPerSource int `toml:"pending_per_source"`
	// ConnectionsPerSource bounds the open connections of one source on ports 80 and 443.
	ConnectionsPerSource int `toml:"connections_per_source"`
	// IPv6SourcePrefix: IPv6 sources are grouped by this prefix length (default 64).
	IPv6SourcePrefix int `toml:"ipv6_source_prefix"`
}

func (l Limits) validate() error {
	for _, v := range []struct {
		key string
		val int
	}{{"max_pending", l.MaxPending}, {"pending_per_source", l.PendingPerSource}, {"connections_per_source", l.ConnectionsPerSource}} {
		if v.val < 0 {
			return fmt.Errorf("[limits] %s = %d: must be a positive number (absent or 0: the default)", v.key, v.val)
		}
	}
	if l.IPv6SourcePrefix < 0 || l.IPv6SourcePrefix > 128 {
		return fmt.Errorf("[limits] ipv6_source_prefix = %d: must be a prefix length from 1 to 128 (absent or 0: 64)", l.IPv6SourcePrefix)
	}
	return nil
}

// Tunnels is the [tunnels] table (tfrouter's; trs has none). Absent keys take the defaults.
type Tunnels struct {
	// Legacy accepts trc v0.1.0's clear-text handshake (default true: the drop-in promise).
	Legacy *bool `toml:"legacy"`
	// Key is the PEM file of the router's Ed25519 key for authenticated tunnels, created at
	// the first start ($VAR and ${VAR} expanded, e.g. ${STATE_DIRECTORY}); empty:
	// authenticated tunnels are off.
	Key string `toml:"key"`
	// HandshakesPerMinute and HandshakeBurst: new connections per source address (IPv4
	// address or IPv6 /64); ConnsPerSource: open connections per source; Sources: size of
	// the per-source table. Negative: unlimited; 0 or absent: the default.
	HandshakesPerMinute int `toml:"handshakes_per_minute"`
	HandshakeBurst      int `toml:"handshake_burst"`
	ConnsPerSource      int `toml:"connections_per_source"`
	Sources             int `toml:"sources"`
	// PendingPerSource: a source's connections still in their handshake; MaxPending: all
	// sources' (the backstop: a client with more sources than the table holds escapes the
	// per-source limits). Negative: unlimited; 0 or absent: the default.
	PendingPerSource int `toml:"pending_per_source"`
	MaxPending       int `toml:"max_pending"`
	// MaxStreams is the most concurrent streams (public connections) one tunnel carries.
	MaxStreams int `toml:"max_streams"`
	// MemoryMiB bounds one tunnel's stream receive buffers; every stream needs 256 KiB of
	// it, so it also caps the streams at MemoryMiB*4.
	MemoryMiB int `toml:"memory_mib"`
	// Over all tunnels together: MaxTunnels tunnels (distinct secrets) registered at once,
	// TotalStreams concurrent streams, and TotalMemoryMiB of stream receive buffers (every
	// stream needs 256 KiB of it, so it also caps the streams at TotalMemoryMiB*4). 0 or
	// absent: the defaults.
	MaxTunnels     int `toml:"max_tunnels"`
	TotalStreams   int `toml:"total_streams"`
	TotalMemoryMiB int `toml:"total_memory_mib"`
	// DataConnections offers authenticated clients protocol 2, in which each public
	// connection's bytes travel on a TCP connection of their own, spliced at both ends
	// (default true; false: every connection is a stream in the session, as protocol 1).
	DataConnections *bool `toml:"data_connections"`
}

// DataConnectionsAllowed is the effective data_connections setting.
func (t Tunnels) DataConnectionsAllowed() bool { return t.DataConnections == nil || *t.DataConnections }

// LegacyAllowed is the effective legacy setting.
func (t Tunnels) LegacyAllowed() bool { return t.Legacy == nil || *t.Legacy }

// Server is the [server] table.
type Server struct {
	Addr        string             `toml:"addr"`
	Port        uint16             `toml:"port"`
	HTTPPort    uint16             `toml:"httpport"`
	ClientsPort uint16             `toml:"clientsport"`
	DBBackend   DBBackend          `toml:"dbbackend"`
	Services    map[string]Service `toml:"services"`
}

// DBBackend is [server.dbbackend]. Only redis is supported, as in trs.
type DBBackend struct {
	Type     string `toml:"type"`
	Addr     string `toml:"addr"`
	Port     uint16 `toml:"port"`
	Username string `toml:"username"`
	Password string `toml:"password"`
	// PasswordFile names a file holding the redis password (a systemd credential), so the
	// password is neither in router.toml (the Nix store) nor on a command line.
	PasswordFile string `toml:"passwordfile"`
	Token        string `toml:"token"`
	// Refresh is the period in seconds of the full resync from redis (0: the default).
	Refresh uint `toml:"refresh"`
}

// Service is one [server.services."name"] entry. Terminate, Redirect and ProxyProtocol are
// tfrouter's (as the optional keys of a redis route).
type Service struct {
	Addr          string `toml:"addr"`
	TLSPort       uint16 `toml:"tlsport"`
	HTTPPort      uint16 `toml:"httpport"`
	ClientSecret  string `toml:"clientsecret"`
	Terminate     string `toml:"terminate"`
	Redirect      bool   `toml:"redirect"`
	ProxyProtocol int    `toml:"proxyprotocol"`
}

// DefaultRefresh is the resync period when refresh is unset.
const DefaultRefresh = 60 * time.Second

// ResyncPeriod is how often the whole route table is reread from redis.
func (d DBBackend) ResyncPeriod() time.Duration {
	if d.Refresh == 0 {
		return DefaultRefresh
	}
	return time.Duration(d.Refresh) * time.Second
}

// Error is a configuration problem; the message names the key.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("config %s: %s", e.Path, e.Msg) }

// Load reads and validates a router.toml file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Path: path, Msg: err.Error()}
	}
	c, err := Parse(path, string(data))
	if err != nil {
		return nil, err
	}
	if err := c.Server.DBBackend.readPasswordFile(); err != nil {
		return nil, &Error{Path: path, Msg: err.Error()}
	}
	if c.Tunnels.Key != "" {
		// ${STATE_DIRECTORY}/tunnel-key.pem names systemd's state directory
		c.Tunnels.Key = os.ExpandEnv(c.Tunnels.Key)
		if c.Tunnels.Key == "" {
			return nil, &Error{Path: path, Msg: "[tunnels] key expands to an empty path"}
		}
	}
	return c, nil
}

// readPasswordFile sets Password from PasswordFile, in which $VAR and ${VAR} are expanded
// (${CREDENTIALS_DIRECTORY}/redis-password names a systemd credential). One trailing newline
// is not part of the password; a missing, unreadable or empty file is an error, never "no
// password".
func (d *DBBackend) readPasswordFile() error {
	if d.PasswordFile == "" {
		return nil
	}
	path := os.ExpandEnv(d.PasswordFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("[server.dbbackend] passwordfile: cannot read the redis password: %v", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if pw == "" {
		return fmt.Errorf("[server.dbbackend] passwordfile: %s is empty: no redis password in it", path)
	}
	d.Password = pw
	return nil
}

// Parse decodes router.toml text; name is used in error messages.
func Parse(name, text string) (*Config, error) {
	var c Config
	md, err := toml.Decode(text, &c)
	if err != nil {
		return nil, &Error{Path: name, Msg: err.Error()}
	}
	_ = md // unknown keys are tolerated, as trs does
	if err := c.validate(); err != nil {
		return nil, &Error{Path: name, Msg: err.Error()}
	}
	// trs lowercases the requested name before looking at the static map; lowercasing the
	// keys here makes mixed-case entries reachable too. CATCH_ALL stays exact.
	svcs := make(map[string]Service, len(c.Server.Services))
	for k, v := range c.Server.Services {
		if k != CatchAll {
			k = strings.ToLower(k)
		}
		svcs[k] = v
	}
	c.Server.Services = svcs
	return &c, nil
}

func (c *Config) validate() error {
	s := c.Server
	// trs silently binds a random port when a port is missing; that is never what an
	// operator meant, so it is an error here.
	if s.Port == 0 {
		return errors.New("[server] port (TLS listener) is required")
	}
	if s.HTTPPort == 0 {
		return errors.New("[server] httpport is required")
	}
	if s.ClientsPort == 0 {
		return errors.New("[server] clientsport is required")
	}
	switch s.DBBackend.Type {
	case "redis":
		if s.DBBackend.Addr == "" || s.DBBackend.Port == 0 {
			return errors.New("[server.dbbackend] needs addr and port")
		}
		if s.DBBackend.Password != "" && s.DBBackend.PasswordFile != "" {
			return errors.New("[server.dbbackend] has both password and passwordfile; use one")
		}
	case "":
		// no backend: static services only
	default:
		return fmt.Errorf("[server.dbbackend] type %q is not supported (only \"redis\")", s.DBBackend.Type)
	}
	for name, svc := range s.Services {
		if svc.ClientSecret == "" && svc.Addr == "" {
			return fmt.Errorf("[server.services.%q] needs addr or clientsecret", name)
		}
		if _, err := routes.ParseTermination(svc.Terminate); err != nil {
			return fmt.Errorf("[server.services.%q] %v", name, err)
		}
		if _, err := routes.CheckProxyProtocol(svc.ProxyProtocol); err != nil {
			return fmt.Errorf("[server.services.%q] %v", name, err)
		}
	}
	t := c.Tunnels
	for _, k := range []struct {
		name string
		v    int
	}{{"max_streams", t.MaxStreams}, {"memory_mib", t.MemoryMiB}, {"max_tunnels", t.MaxTunnels}, {"total_streams", t.TotalStreams}, {"total_memory_mib", t.TotalMemoryMiB}} {
		if k.v < 0 {
			return fmt.Errorf("[tunnels] %s = %d: must not be negative (0 or absent: the default)", k.name, k.v)
		}
	}
	if t.TotalMemoryMiB > 0 && t.MemoryMiB > t.TotalMemoryMiB {
		return fmt.Errorf("[tunnels] memory_mib = %d is more than total_memory_mib = %d, the budget of all tunnels together", t.MemoryMiB, t.TotalMemoryMiB)
	}
	if !c.Tunnels.LegacyAllowed() && c.Tunnels.Key == "" {
		return errors.New("[tunnels] legacy = false needs key: without a key no tunnel client could register")
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if c.TLS != nil {
		if err := c.TLS.validate(); err != nil {
			return fmt.Errorf("[tls] %v", err)
		}
	}
	return nil
}
