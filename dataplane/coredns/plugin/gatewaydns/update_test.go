package gatewaydns

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// zoneListing renders everything a zone serves: the transfer (apex, every name in tree
// order, SOA again), plus the element count, so two zones can be compared exactly.
func zoneListing(t *testing.T, bz *builtZone) string {
	t.Helper()
	ch, err := bz.zone.Transfer(0)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for rrs := range ch {
		// One batch per name; its types come in Go map order, so group them by type (keeping
		// the order of records within a type, which is what clients see).
		lines := rrStrings(rrs)
		byType := map[string][]string{}
		var types []string
		for _, l := range lines {
			typ := strings.SplitN(l, "\t", 5)[3]
			if _, ok := byType[typ]; !ok {
				types = append(types, typ)
			}
			byType[typ] = append(byType[typ], l)
		}
		sort.Strings(types)
		for _, typ := range types {
			for _, l := range byType[typ] {
				b.WriteString(l)
				b.WriteByte('\n')
			}
		}
	}
	fmt.Fprintf(&b, "elements=%d records=%d", bz.zone.Tree.Count, bz.count)
	return b.String()
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// TestIncrementalUpdateEqualsFullBuild applies random pushes (owners added, changed,
// removed, case variants of one name, invalid and oversized fields) and checks that the
// incremental zone is exactly the zone a full build gives, answers included, and that the
// previous zone is left untouched.
func TestIncrementalUpdateEqualsFullBuild(t *testing.T) {
	def := zoneDefaults{ttl: diffTTL, nameservers: []string{"ns1.gw.test.", "ns2.gw.test."}, hostmaster: "hostmaster.gw.test."}
	lim := zoneLimits{maxRecords: 100000, maxValueBytes: 4000}
	nolog := func(string, ...any) {}
	incremental := 0
	for seed := int64(1); seed <= 6; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		gz := generateZones(seed)[0]
		fields := gz.fieldsJSON(t)
		prev := buildZone(gz.name, fields, nil, def, lim, nolog)
		for step := 0; step < 30; step++ {
			before := zoneListing(t, prev)
			next := map[string]string{}
			for k, v := range fields {
				next[k] = v
			}
			keys := make([]string, 0, len(next))
			for k := range next {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for n := 1 + rnd.Intn(3); n > 0; n-- {
				k := keys[rnd.Intn(len(keys))]
				switch rnd.Intn(7) {
				case 0:
					delete(next, k)
				case 1:
					next[k] = fmt.Sprintf(`{"a":[{"ip":"10.1.%d.%d"}]}`, step, n)
				case 2:
					next[fmt.Sprintf("new%d-%d", step, n)] = `{"txt":[{"text":"new"}],"aaaa":[{"ip":"2001:db8::9"}]}`
				case 3:
					if k != "@" {
						next[strings.ToUpper(k)] = `{"a":[{"ip":"10.2.2.2"}]}` // same name as k
					}
				case 4:
					next["bad name"+fmt.Sprint(step)] = `{"a":[{"ip":"10.3.3.3"}]}`
				case 5:
					next[fmt.Sprintf("big%d", step)] = `{"txt":[{"text":"` + strings.Repeat("x", 5000) + `"}]}`
				case 6:
					next[fmt.Sprintf("deep.ent%d.x", step)] = `{"ns":[{"host":"ns.elsewhere.example."}]}`
				}
			}
			got := updateFrom(gz.name, next, prev, def, lim, nolog)
			want := buildZone(gz.name, next, nil, def, lim, nolog)
			if got != nil && got != prev && got.digest != want.digest {
				t.Fatalf("seed %d step %d: digest of the update differs from the full build's", seed, step)
			}
			if got != nil && (strings.Join(sorted(slices.Collect(maps.Keys(got.owners))), "\n") !=
				strings.Join(sorted(slices.Collect(maps.Keys(want.owners))), "\n") ||
				strings.Join(sorted(got.mixed), "\n") != strings.Join(sorted(want.mixed), "\n")) {
				t.Fatalf("seed %d step %d: fields or mixed-case fields differ from the full build's", seed, step)
			}
			if got == nil {
				got = buildZone(gz.name, next, prev, def, lim, nolog)
			} else {
				incremental++
				llrbCheck(t, got.zone.Tree.Root)
			}
			if zoneListing(t, got) != zoneListing(t, want) {
				t.Fatalf("seed %d step %d: incremental zone differs\ngot:\n%s\nwant:\n%s", seed, step,
					zoneListing(t, got), zoneListing(t, want))
			}
			if zoneListing(t, prev) != before {
				t.Fatalf("seed %d step %d: the previous zone was modified", seed, step)
			}
			g1, g2 := &GatewayDNS{}, &GatewayDNS{}
			g1.install(&zoneSet{zones: map[string]*zoneRef{gz.name: newZoneRef(got)}})
			g2.install(&zoneSet{zones: map[string]*zoneRef{gz.name: newZoneRef(want)}})
			g1.loaded.Store(true)
			g2.loaded.Store(true)
			for k := range next {
				name, ok := ownerName(k, gz.name)
				if !ok {
					continue
				}
				for _, q := range []string{name, "x." + name} {
					for _, qt := range []uint16{dns.TypeA, dns.TypeTXT, dns.TypeNS, dns.TypeHTTPS} {
						if a, b := normalise(t, ask(t, g1, q, qt)), normalise(t, ask(t, g2, q, qt)); a != b {
							t.Fatalf("seed %d step %d: %s %s\nincremental: %s\nfull: %s", seed, step, q,
								dns.TypeToString[qt], a, b)
						}
					}
				}
			}
			prev, fields = got, next
		}
	}
	if incremental < 50 {
		t.Fatalf("only %d of 180 updates took the incremental path", incremental)
	}
	t.Logf("%d of 180 updates were incremental", incremental)
}
