// Command coredns-tfgw is CoreDNS v1.14.7 with only the plugins a gateway needs, plus the
// gateway's own gatewaydns plugin, which serves the zones the agent writes in redis.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// Each blank import registers one plugin with CoreDNS's caddy fork.
	_ "github.com/coredns/coredns/plugin/acl"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/secondary"

	_ "tfgateway.dev/dataplane/coredns/plugin/gatewaydns"
)

// directives is the execution order of the plugins in a server block. gatewaydns comes
// before forward so that names in a redis zone never leave the gateway; file sits next to
// it so the benchmark and the differential test can serve the same data from a zone file;
// secondary lets a gateway (or the tests) follow another's zones by transfer (AXFR/IXFR).
// acl sits after the zone plugins and before forward: it sees only the queries no zone of
// the gateway answered, so it limits recursion to allowed clients while everyone gets the
// gateway's own zones.
var directives = []string{
	"bind",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"cache",
	"gatewaydns",
	"file",
	"secondary",
	"acl",
	"forward",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
