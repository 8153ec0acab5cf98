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
				checkIndex(t, got)
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

// TestRecordsHeldOnce checks that the records below the apex are held once, shared by an
// owner's bookkeeping and the zone's tree (in this version and the next), that the apex's
// records go in as copies, and that a record not in normal form is copied, never
// normalised in place (an older version of the zone may be answering with it).
func TestRecordsHeldOnce(t *testing.T) {
	def := zoneDefaults{ttl: 300, nameservers: []string{"ns1.gw.test."}}
	lim := zoneLimits{maxRecords: 1000, maxValueBytes: 4000}
	nolog := func(string, ...any) {}
	fields := map[string]string{
		"@":         `{"ns":[{"host":"ns1.gw.test."}],"a":[{"ip":"10.0.0.1"}]}`,
		"www":       `{"a":[{"ip":"10.0.0.2"}],"aaaa":[{"ip":"2001:db8::2"}],"txt":[{"text":"t"}],"caa":[{"flag":0,"tag":"issue","value":"ca.example"}]}`,
		"mail":      `{"mx":[{"host":"MX.Example.NET","preference":10}]}`,
		"alias":     `{"cname":[{"host":"WWW.held.test"}]}`,
		"_sip._tcp": `{"srv":[{"priority":1,"weight":1,"port":5060,"target":"sip.held.test."}]}`,
		"sub":       `{"ns":[{"host":"NS.Elsewhere.example"}]}`,
	}
	bz := buildZone("held.test.", fields, nil, def, lim, nolog)
	shared := func(bz *builtZone, field string) {
		t.Helper()
		po := bz.owners[field]
		if len(po.rrs) == 0 {
			t.Fatalf("field %q: no records", field)
		}
		name, _ := ownerName(field, bz.name)
		e, ok := bz.zone.Tree.Search(name)
		if !ok {
			t.Fatalf("field %q: %s not in the tree", field, name)
		}
		for _, rr := range po.rrs {
			if !slices.Contains(e.All(), rr) {
				t.Fatalf("field %q: the tree holds a copy of %s, not the parsed record", field, rr)
			}
		}
	}
	for f := range fields {
		if f != "@" {
			shared(bz, f)
		}
	}
	for _, rr := range bz.owners["@"].rrs {
		if slices.Contains(bz.zone.Apex.NS, rr) {
			t.Fatalf("apex record %s is shared: the zone's apex must hold its own copy", rr)
		}
	}
	// The next version (a named change) keeps sharing the unchanged owners' records.
	v := `{"a":[{"ip":"10.0.0.9"}]}`
	next := applyChanges(bz, map[string]*string{"www": &v}, def, lim, nolog)
	if next == nil {
		t.Fatal("the change was not applied incrementally")
	}
	shared(next, "www")
	shared(next, "mail")

	// A record that Insert would change is copied; the given record stays as it was.
	a := &dns.A{Hdr: dns.RR_Header{Name: "Upper.held.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{10, 0, 0, 3}}
	cname := &dns.CNAME{Hdr: dns.RR_Header{Name: "c.held.test.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "T.held.test."}
	for _, rr := range []dns.RR{a, cname} {
		if normalised(rr) {
			t.Fatalf("%s counted as normalised", rr)
		}
		orig := rr.String()
		if err := insertRR(bz.zone, bz.name, rr); err != nil {
			t.Fatal(err)
		}
		if rr.String() != orig {
			t.Fatalf("insertRR modified the record it was given: %s -> %s", orig, rr)
		}
	}
	if e, ok := bz.zone.Tree.Search("upper.held.test."); !ok || e.All()[0] == dns.RR(a) {
		t.Fatal("the record in upper case is not in the tree as a lowercased copy")
	}
}
