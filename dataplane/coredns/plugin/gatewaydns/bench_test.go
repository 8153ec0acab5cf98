// Benchmarks of zone building (go test -bench BuildZone); not run by the test suite.

package gatewaydns

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/file"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
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
	g.install(&zoneSet{zones: map[string]*zoneRef{bz.name: newZoneRef(bz)}})
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
		if bz := updateFrom("bench.test.", f, prev, def, lim, func(string, ...any) {}); bz == nil || bz == prev {
			b.Fatal("not incremental")
		}
	}
}

// BenchmarkAgentWritesIntoOneZone fills one zone with 2500 names through a real redis, the
// way the agent does (one MULTI/HSET/PUBLISH/EXEC per name, one every 5 ms, so the plugin
// hears of each twice), with reload pacing off and on, and reports the zone reloads and the
// time spent in them per fill. benchmarks/dns measures the same with the real binary.
func BenchmarkAgentWritesIntoOneZone(b *testing.B) {
	for _, coalesce := range []time.Duration{0, 25 * time.Millisecond} {
		b.Run("coalesce="+coalesce.String(), func(b *testing.B) {
			r := startRedis(b)
			cfg := testConfig(r.addr())
			cfg.coalesce = coalesce
			g, s := startPlugin(b, cfg)
			ctx := context.Background()
			const names = 2500
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := r.cli.Del(ctx, "fill.test.").Err(); err != nil {
					b.Fatal(err)
				}
				loads0 := s.zoneLoads.Load()
				start := time.Now()
				for n := 0; n < names; n++ {
					pipe := r.cli.Pipeline()
					agentWrite(ctx, pipe, "fill.test.", fmt.Sprintf("h%d", n), fmt.Sprintf(`{"a":[{"ip":"10.5.%d.%d"}]}`, n/250, n%250+1))
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
					time.Sleep(time.Until(start.Add(time.Duration(n+1) * 5 * time.Millisecond)))
				}
				last := fmt.Sprintf("10.5.%d.%d", (names-1)/250, (names-1)%250+1)
				eventually(b, 30*time.Second, "last name", answersA(b, g, fmt.Sprintf("h%d.fill.test.", names-1), last))
				b.ReportMetric(float64(s.zoneLoads.Load()-loads0), "reloads/fill")
			}
		})
	}
}

// BenchmarkNamedChangesInLargeZone is the scale case of issue 17 in-process, against a
// real redis: a 50,000-name zone, agent transactions naming their field at 200/s, and a
// probe change every 50 ms timed until the plugin answers it (polled every 0.5 ms). It
// reports the probe's change -> visible p50/p99/max. benchmarks/dns measures the same
// with the real binary over UDP.
func BenchmarkNamedChangesInLargeZone(b *testing.B) {
	r := startRedis(b)
	ctx := context.Background()
	const zone, names = "scale.test.", 50000
	kv := []any{}
	for i := 0; i < names; i++ {
		kv = append(kv, fmt.Sprintf("h%d", i), fmt.Sprintf(`{"a":[{"ip":"10.%d.%d.%d","ttl":3600}]}`, i/65536, i/256%256, i%256))
		if len(kv) == 10000 {
			if err := r.cli.HSet(ctx, zone, kv...).Err(); err != nil {
				b.Fatal(err)
			}
			kv = kv[:0]
		}
	}
	r.hset(zone, "probe", `{"a":[{"ip":"10.255.0.1"}]}`)
	cfg := testConfig(r.addr())
	g, _ := startPlugin(b, cfg)
	named := func(field, ip string) {
		pipe := r.cli.TxPipeline()
		pipe.HSet(ctx, zone, field, fmt.Sprintf(`{"a":[{"ip":"%s","ttl":3600}]}`, ip))
		pipe.Publish(ctx, AgentChannel, zone+" "+field)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Error(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		stop := make(chan struct{})
		streamed := make(chan int)
		go func() {
			n := 0
			start := time.Now()
			for {
				select {
				case <-stop:
					streamed <- n
					return
				case <-time.After(time.Until(start.Add(time.Duration(n) * 5 * time.Millisecond))):
				}
				named(fmt.Sprintf("h%d", n*7919%names), fmt.Sprintf("10.77.%d.%d", n/250%250, n%250+1))
				n++
			}
		}()
		var lat []time.Duration
		for p := 0; p < 150; p++ {
			time.Sleep(50 * time.Millisecond)
			ip := fmt.Sprintf("10.254.%d.%d", p/250, p%250+1)
			t0 := time.Now()
			named("probe", ip)
			for answersA(b, g, "probe."+zone, ip)() != nil {
				if time.Since(t0) > 5*time.Second {
					b.Fatal("probe change not visible within 5 s")
				}
				time.Sleep(500 * time.Microsecond)
			}
			lat = append(lat, time.Since(t0))
		}
		close(stop)
		n := <-streamed
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
		b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
		b.ReportMetric(float64(n)/(float64(len(lat))*0.05), "changes/s")
	}
}

// BenchmarkApplyChange is one named change (applyChanges, the build stage of a push) in
// zones of 100 and 50,000 names: what a change costs in the loader, apart from redis.
func BenchmarkApplyChange(b *testing.B) {
	for _, owners := range []int{100, 50000} {
		b.Run(fmt.Sprint(owners), func(b *testing.B) {
			f := map[string]string{}
			for i := 0; i < owners; i++ {
				f[fmt.Sprintf("h%d", i)] = fmt.Sprintf(`{"a":[{"ip":"10.0.%d.%d","ttl":3600}]}`, i/256%256, i%256)
			}
			def, lim := zoneDefaults{ttl: 300, nameservers: []string{"ns1.bench.test."}}, zoneLimits{maxRecords: 200000, maxValueBytes: 65536}
			bz := buildZone("bench.test.", f, nil, def, lim, func(string, ...any) {})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				v := fmt.Sprintf(`{"a":[{"ip":"10.1.%d.%d","ttl":3600}]}`, i/256%256, i%256)
				bz = applyChanges(bz, map[string]*string{fmt.Sprintf("h%d", (i*7919)%owners): &v}, def, lim, func(string, ...any) {})
			}
		})
	}
}
