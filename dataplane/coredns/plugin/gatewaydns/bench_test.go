// Benchmarks of zone building (go test -bench BuildZone); not run by the test suite.

package gatewaydns

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
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

// scaleFields is benchmarks/dns's scale zone (zone_fields in bench.py): n names with an A
// record each, a TXT record for every fourth, and the probe.
func scaleFields(n int) map[string]string {
	f := make(map[string]string, n+1)
	for i := 0; i < n; i++ {
		v := fmt.Sprintf(`{"a":[{"ip":"10.%d.%d.%d","ttl":3600}]`, i/65536%256, i/256%256, i%256)
		if i%4 == 0 {
			v += fmt.Sprintf(`,"txt":[{"text":"owner %d","ttl":600}]`, i)
		}
		f[fmt.Sprintf("h%d", i)] = v + "}"
	}
	f["probe"] = `{"a":[{"ip":"10.255.0.1","ttl":300}]}`
	return f
}

// scaleZoneFile is the same zone as the file plugin reads it (zone_file in bench.py).
func scaleZoneFile(zone string, n int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s 300 IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 1800 1209600 60\n", zone)
	fmt.Fprintf(&sb, "%s 300 IN NS ns1.bench.test.\n", zone)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "h%d.%s 300 IN A 10.%d.%d.%d\n", i, zone, i/65536%256, i/256%256, i%256)
		if i%4 == 0 {
			fmt.Fprintf(&sb, "h%d.%s 300 IN TXT \"owner %d\"\n", i, zone, i)
		}
	}
	fmt.Fprintf(&sb, "probe.%s 300 IN A 10.255.0.1\n", zone)
	return sb.String()
}

// scaleQueries is benchmarks/dns's query mix (scale_queries in bench.py): 80 % existing A,
// 10 % NXDOMAIN, 10 % NODATA (AAAA).
func scaleQueries(zone string, n int) []*dns.Msg {
	out := make([]*dns.Msg, 0, 10000)
	for i := 0; i < 10000; i++ {
		m := new(dns.Msg)
		switch {
		case i%10 < 8:
			m.SetQuestion(fmt.Sprintf("h%d.%s", (i*7919)%n, zone), dns.TypeA)
		case i%10 == 8:
			m.SetQuestion(fmt.Sprintf("missing%d.%s", i, zone), dns.TypeA)
		default:
			m.SetQuestion(fmt.Sprintf("h%d.%s", (i*104729)%n, zone), dns.TypeAAAA)
		}
		out = append(out, m)
	}
	return out
}

// packWriter packs every reply into a reused buffer, as a server writes it to the wire.
type packWriter struct {
	test.ResponseWriter
	buf []byte
}

func (w *packWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.PackBuffer(w.buf)
	w.buf = b[:0]
	return err
}

// BenchmarkServeScale is the per-query cost at benchmarks/dns's scale (issue 17: one zone of
// 50,000 names, the query mix of its QPS table), gatewaydns against CoreDNS's file plugin
// reading the same zone from a zone file, each with only its own zone in the heap (the
// other's is garbage before the timer starts): so the GC's cost, which grows with the live
// heap each cycle marks, counts as it does in the server. Reports the live heap per record
// after a GC (the zone's share of it: measured from before the zone was built). Run:
//
//	go test -run X -bench ServeScale -benchmem ./plugin/gatewaydns/
func BenchmarkServeScale(b *testing.B) {
	const zone, names = "scale.test.", 50000
	records := names + names/4 + 1
	queries := scaleQueries(zone, names)
	build := map[string]func() plugin.Handler{
		"gatewaydns": func() plugin.Handler {
			def := zoneDefaults{ttl: 300, nameservers: []string{"ns1.bench.test."}}
			lim := zoneLimits{maxRecords: 200000, maxValueBytes: 65536}
			bz := buildZone(zone, scaleFields(names), nil, def, lim, func(string, ...any) {})
			g := &GatewayDNS{}
			g.install(&zoneSet{zones: map[string]*zoneRef{bz.name: newZoneRef(bz)}})
			g.loaded.Store(true)
			return g
		},
		"file": func() plugin.Handler {
			z, err := file.Parse(strings.NewReader(scaleZoneFile(zone, names)), zone, "db.scale", 0)
			if err != nil {
				b.Fatal(err)
			}
			return file.File{Zones: file.Zones{Z: map[string]*file.Zone{zone: z}, Names: []string{zone}}}
		},
	}
	for _, name := range []string{"gatewaydns", "file"} {
		b.Run(name, func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			h := build[name]()
			runtime.GC()
			runtime.ReadMemStats(&after)
			w := &packWriter{}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := h.ServeDNS(ctx, w, queries[i%len(queries)]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(records), "live-B/record")
			runtime.KeepAlive(h)
		})
	}
}
