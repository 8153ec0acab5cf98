package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A router.toml as operators and trs's README write it.
const trsConfig = `
[server]
addr = "0.0.0.0"
port = 443
httpport = 80
clientsport = 18000

[server.dbbackend]
type 	 = "redis"
addr     = "127.0.0.1"
port     = 6379
refresh  = 10
password = "pw"

[server.services]
    [server.services."www.Bing.com"]
        addr = "13.107.21.200"
        tlsport = 443
        httpport = 80
    [server.services."tunnel.example"]
        clientsecret = "1234:s3cr3t"
    [server.services."CATCH_ALL"]
        addr = "10.0.0.9"
        tlsport = 443
        httpport = 80
`

func TestParseTrsConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "router.toml")
	if err := os.WriteFile(p, []byte(trsConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if s.Addr != "0.0.0.0" || s.Port != 443 || s.HTTPPort != 80 || s.ClientsPort != 18000 {
		t.Fatalf("server = %+v", s)
	}
	if s.DBBackend.Type != "redis" || s.DBBackend.Port != 6379 || s.DBBackend.Password != "pw" || s.DBBackend.ResyncPeriod().Seconds() != 10 {
		t.Fatalf("dbbackend = %+v", s.DBBackend)
	}
	if s.Services["www.bing.com"].TLSPort != 443 {
		t.Fatalf("static names are lowercased: %+v", s.Services)
	}
	if s.Services["tunnel.example"].ClientSecret != "1234:s3cr3t" {
		t.Fatalf("clientsecret lost: %+v", s.Services)
	}
	if s.Services[CatchAll].Addr != "10.0.0.9" {
		t.Fatal("CATCH_ALL lost")
	}
}

func TestConfigErrors(t *testing.T) {
	for name, text := range map[string]string{
		"syntax":        "[server\n",
		"no port":       "[server]\nhttpport=1\nclientsport=2\n",
		"no httpport":   "[server]\nport=1\nclientsport=2\n",
		"bad backend":   "[server]\nport=1\nhttpport=2\nclientsport=3\n[server.dbbackend]\ntype=\"etcd\"\n",
		"redis no addr": "[server]\nport=1\nhttpport=2\nclientsport=3\n[server.dbbackend]\ntype=\"redis\"\n",
		"empty service": "[server]\nport=1\nhttpport=2\nclientsport=3\n[server.services.\"x\"]\ntlsport=1\n",
		"port range":    "[server]\nport=70000\nhttpport=2\nclientsport=3\n",
	} {
		var ce *Error
		if _, err := Parse(name, text); !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want *config.Error", name, err)
		}
	}
	if _, err := Load("/nonexistent/router.toml"); err == nil {
		t.Error("missing file accepted")
	}
}

// [tls]: defaults, and each bad value refused with a message naming the key.
func TestTLSTable(t *testing.T) {
	base := "[server]\nport = 443\nhttpport = 80\nclientsport = 18000\n"
	c, err := Parse("t", base+"[tls]\nstorage = \"/var/lib/x\"\nacme_ca = \"https://ca.example/dir\"\nwildcards = [\"*.GW.example.\"]\nretry_min = \"2s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	tl := c.TLS
	if tl.IssueRate != DefaultIssueRate || tl.RetryMin != 2*time.Second || tl.RetryMax != DefaultRetryMax ||
		tl.DNSResolver != DefaultDNSResolver || len(tl.Challenges) != 2 || tl.Wildcards[0] != "gw.example" {
		t.Fatalf("defaults: %+v", tl)
	}
	if !tl.UsesDNS01("a.gw.example") || !tl.UsesDNS01("*.gw.example") || tl.UsesDNS01("agw.example") {
		t.Fatal("UsesDNS01")
	}
	if c, _ := Parse("t", base); c.TLS != nil {
		t.Fatal("no [tls]: nil")
	}
	for bad, want := range map[string]string{
		"[tls]\n": "storage",
		"[tls]\nstorage=\"/x\"\nacme_ca=\"http://ca\"":                                        "acme_ca",
		"[tls]\nstorage=\"/x\"\nacme_ca=\"https://ca/d\"\nchallenges=[\"dns-01\"]":            "challenges",
		"[tls]\nstorage=\"/x\"\nacme_ca=\"https://ca/d\"\nretry_min=\"1h\"\nretry_max=\"1m\"": "retry_max",
		"[tls]\nstorage=\"/x\"\n[[tls.certificates]]\ncert=\"/c\"\n":                          "cert and key",
		"[server.services.\"a\"]\naddr=\"1.2.3.4\"\nterminate=\"yes\"\n":                      "terminate",
		"[server.services.\"a\"]\naddr=\"1.2.3.4\"\nproxyprotocol=3\n":                        "proxyprotocol",
	} {
		if _, err := Parse("t", base+bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one naming %s", bad, err, want)
		}
	}
}

// passwordfile: the redis password from a file (a systemd credential), one trailing newline
// dropped; a missing or empty file stops the router instead of running without a password.
func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	cfg := func(extra string) string {
		p := filepath.Join(dir, "router.toml")
		text := "[server]\nport=1\nhttpport=2\nclientsport=3\n[server.dbbackend]\ntype=\"redis\"\naddr=\"127.0.0.1\"\nport=6379\n" + extra
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	for _, ref := range []string{pw, "${CREDENTIALS_DIRECTORY}/redis-password"} {
		c, err := Load(cfg("passwordfile = \"" + ref + "\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if c.Server.DBBackend.Password != "s3cret" {
			t.Fatalf("%s: password = %q, want s3cret", ref, c.Server.DBBackend.Password)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ extra, want string }{
		"missing": {"passwordfile = \"" + filepath.Join(dir, "nope") + "\"\n", "cannot read the redis password"},
		"empty":   {"passwordfile = \"" + empty + "\"\n", "is empty"},
		"both":    {"password = \"x\"\npasswordfile = \"" + pw + "\"\n", "both password and passwordfile"},
	} {
		_, err := Load(cfg(tc.extra))
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a *config.Error containing %q", name, err, tc.want)
		}
	}
}

func TestTunnelsTable(t *testing.T) {
	base := "[server]\nport = 443\nhttpport = 80\nclientsport = 18000\n"
	c, err := Parse("t", base)
	if err != nil || !c.Tunnels.LegacyAllowed() || c.Tunnels.Key != "" || !c.Tunnels.DataConnectionsAllowed() {
		t.Fatalf("defaults: %+v, %v", c.Tunnels, err)
	}
	c, err = Parse("t", base+"[tunnels]\nlegacy = false\nkey = \"/k.pem\"\nhandshakes_per_minute = 30\ndata_connections = false\n")
	if err != nil || c.Tunnels.LegacyAllowed() || c.Tunnels.HandshakesPerMinute != 30 || c.Tunnels.DataConnectionsAllowed() {
		t.Fatalf("set: %+v, %v", c.Tunnels, err)
	}
	if _, err := Parse("t", base+"[tunnels]\nlegacy = false\n"); err == nil || !strings.Contains(err.Error(), "needs key") {
		t.Fatalf("legacy off without a key: %v", err)
	}
	c, err = Parse("t", base+"[tunnels]\nmax_tunnels = 50\ntotal_streams = 900\ntotal_memory_mib = 512\nmemory_mib = 64\n")
	if err != nil || c.Tunnels.MaxTunnels != 50 || c.Tunnels.TotalStreams != 900 || c.Tunnels.TotalMemoryMiB != 512 || c.Tunnels.MemoryMiB != 64 {
		t.Fatalf("bounds over all tunnels: %+v, %v", c.Tunnels, err)
	}
	for text, want := range map[string]string{
		"max_tunnels = -1":                         "[tunnels] max_tunnels = -1: must not be negative",
		"total_memory_mib = -5":                    "[tunnels] total_memory_mib = -5: must not be negative",
		"total_streams = -2":                       "[tunnels] total_streams = -2: must not be negative",
		"memory_mib = -1":                          "[tunnels] memory_mib = -1: must not be negative",
		"memory_mib = 600\ntotal_memory_mib = 512": "memory_mib = 600 is more than total_memory_mib = 512",
	} {
		if _, err := Parse("t", base+"[tunnels]\n"+text+"\n"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}

// [limits]: read when present, absent keys zero (the router's defaults), bad values refused
// naming the key.
func TestLimitsTable(t *testing.T) {
	base := "[server]\nport = 443\nhttpport = 80\nclientsport = 18000\n"
	c, err := Parse("t", base+"[limits]\nmax_pending = 5000\npending_per_source = 64\nconnections_per_source = 512\nipv6_source_prefix = 56\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits != (Limits{MaxPending: 5000, PendingPerSource: 64, ConnectionsPerSource: 512, IPv6SourcePrefix: 56}) {
		t.Fatalf("limits = %+v", c.Limits)
	}
	if c, err := Parse("t", base); err != nil || c.Limits != (Limits{}) {
		t.Fatalf("no [limits]: %+v %v", c, err)
	}
	for text, key := range map[string]string{
		"pending_per_source = -1":     "pending_per_source",
		"connections_per_source = -5": "connections_per_source",
		"max_pending = -1":            "max_pending",
		"ipv6_source_prefix = 129":    "ipv6_source_prefix",
	} {
		_, err := Parse("t", base+"[limits]\n"+text+"\n")
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: err = %v, want one naming %s", text, err, key)
		}
	}
}
