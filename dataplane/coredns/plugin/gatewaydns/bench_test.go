// Benchmarks of zone building (go test -bench BuildZone); not run by the test suite.

package gatewaydns

import (
	"context"

	"fmt"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/file"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"testing"
)

func benchFields() map[string]string {
	f := map[string]string{}
	for i := 0; i < 2000; i++ {
		f[fmt.Sprintf("h%d", i)] = fmt.Sprintf(`{"a":[{"ip":"10.0.%d.%d","ttl":3600}],"txt":[{"text":"owner %d","ttl":600}]}`, i/256, i%256, i)
	}
	return f
}

func BenchmarkBuildZoneCold(b *testing.B) {
	f := benchFields()
	for i := 0; i < b.N; i++ {
		buildZone("bench.test.", f, nil, zoneDefaults{ttl: 300}, zoneLimits{maxRecords: 100000, maxValueBytes: 65536}, func(string, ...any) {})
	}
}

func BenchmarkBuildZoneWarm(b *testing.B) {
	f := benchFields()
	prev := buildZone("bench.test.", f, nil, zoneDefaults{ttl: 300}, zoneLimits{maxRecords: 100000, maxValueBytes: 65536}, func(string, ...any) {})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buildZone("bench.test.", f, prev, zoneDefaults{ttl: 300}, zoneLimits{maxRecords: 100000, maxValueBytes: 65536}, func(string, ...any) {})
	}
}

// BenchmarkServe compares the query path of gatewaydns with CoreDNS's file plugin serving
// the very same zone object, so only the plugins' own overhead differs.
func BenchmarkServe(b *testing.B) {
	bz := buildZone("bench.test.", benchFields(), nil, zoneDefaults{ttl: 300, nameservers: []string{"ns1.bench.test."}},
		zoneLimits{maxRecords: 100000, maxValueBytes: 65536}, func(string, ...any) {})
	g := &GatewayDNS{}
	g.install(&zoneSet{zones: map[string]*builtZone{bz.name: bz}})
	g.loaded.Store(true)
	f := file.File{Zones: file.Zones{Z: map[string]*file.Zone{bz.name: bz.zone}, Names: []string{bz.name}}}
	req := new(dns.Msg)
	req.SetQuestion("h1234.bench.test.", dns.TypeA)
	for _, h := range []plugin.Handler{g, f} {
		b.Run(h.Name(), func(b *testing.B) {
			w := &test.ResponseWriter{}
			for i := 0; i < b.N; i++ {
				if _, err := h.ServeDNS(context.Background(), w, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUpdateZone is the push path: one owner of a 2000-owner zone changed.
func BenchmarkUpdateZone(b *testing.B) {
	f := benchFields()
	def := zoneDefaults{ttl: 300}
	lim := zoneLimits{maxRecords: 100000, maxValueBytes: 65536}
	prev := buildZone("bench.test.", f, nil, def, lim, func(string, ...any) {})
	f["h7"] = `{"a":[{"ip":"10.9.9.9"}]}`
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := contentDigest(f)
		if updateZone("bench.test.", f, prev, d, def, lim, func(string, ...any) {}) == nil {
			b.Fatal("not incremental")
		}
	}
}
