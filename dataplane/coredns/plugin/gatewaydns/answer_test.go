package gatewaydns

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/file/tree"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// checkIndex fails unless bz's index holds exactly the elements of its tree (the same
// pointers) and specials counts the tree's delegations and DNAMEs below the apex.
func checkIndex(t *testing.T, bz *builtZone) {
	t.Helper()
	elems := bz.zone.Tree.All()
	if bz.index.size != len(elems) {
		t.Fatalf("zone %s: index holds %d names, tree %d", bz.name, bz.index.size, len(elems))
	}
	for _, e := range elems {
		if got := bz.index.get(e.Name()); got != e {
			t.Fatalf("zone %s: index gives %p for %s, tree %p", bz.name, got, e.Name(), e)
		}
	}
	if want := countSpecial(bz.zone.Tree, bz.name); bz.specials != want {
		t.Fatalf("zone %s: specials %d, tree has %d", bz.name, bz.specials, want)
	}
}

// section renders one section for comparison.
func section(rrs []dns.RR) string { return strings.Join(rrStrings(rrs), " | ") }

// sameAsLookup asks bz.lookup and file's Lookup (with the negative SOA) every name and type,
// with and without DO, and fails on any difference in the sections or the result. It
// returns how many were answered directly from the index.
func sameAsLookup(t *testing.T, bz *builtZone, names []string) int {
	t.Helper()
	direct := 0
	for _, name := range names {
		if !dns.IsSubDomain(bz.name, name) {
			continue
		}
		for _, qt := range diffTypes {
			for _, do := range []bool{false, true} {
				req := new(dns.Msg)
				req.SetQuestion(name, qt)
				if do {
					req.SetEdns0(1232, true)
				}
				state := request.Request{W: &packWriter{}, Req: req}
				ctx := context.Background()
				a1, n1, e1, r1 := bz.lookup(ctx, state, name)
				a2, n2, e2, r2 := bz.zone.Lookup(ctx, state, name)
				n2 = negativeSOA(n2, bz.negSOA)
				got := fmt.Sprintf("%d\n%s\n%s\n%s", r1, section(a1), section(n1), section(e1))
				want := fmt.Sprintf("%d\n%s\n%s\n%s", r2, section(a2), section(n2), section(e2))
				if got != want {
					t.Fatalf("%s %s do=%v:\nlookup:\n%s\nfile's Lookup:\n%s", name, dns.TypeToString[qt], do, got, want)
				}
				if _, _, ok := bz.direct(ctx, state, name); ok {
					direct++
				}
			}
		}
	}
	return direct
}

// withoutDelegations drops the NS records below the apex of a generated zone (the zone the
// direct answers are for; with delegations everything goes to Lookup).
func withoutDelegations(z *genZone) *genZone {
	out := &genZone{name: z.name, owners: map[string][]genRec{}, soa: z.soa}
	for o, recs := range z.owners {
		for _, r := range recs {
			if r.typ != "ns" || o == "@" {
				out.add(o, r)
			}
		}
	}
	return out
}

// TestDirectAnswersEqualLookup checks that the answers taken from the name index are the
// ones file's Lookup gives, on the differential test's generated zones (wildcards, empty
// non-terminals, CNAME chains, MX/SRV additionals, mixed-case fields) with and without
// delegations, and after incremental updates that add and remove names, delegations and
// CNAMEs: the index follows the tree version by version.
func TestDirectAnswersEqualLookup(t *testing.T) {
	def := zoneDefaults{ttl: diffTTL, nameservers: []string{"ns1.gw.test.", "ns2.gw.test."}, hostmaster: "hostmaster.gw.test."}
	lim := zoneLimits{maxRecords: 100000, maxValueBytes: 4000}
	nolog := func(string, ...any) {}
	direct, incremental := 0, 0
	for seed := int64(1); seed <= 2; seed++ {
		zones := generateZones(seed)
		for _, gz := range []*genZone{zones[0], withoutDelegations(zones[0])} {
			rnd := rand.New(rand.NewSource(seed))
			fields := gz.fieldsJSON(t)
			names := queryNames([]*genZone{gz})
			bz := buildZone(gz.name, fields, nil, def, lim, nolog)
			checkIndex(t, bz)
			direct += sameAsLookup(t, bz, names)
			for step := 0; step < 12; step++ {
				changes := map[string]*string{}
				set := func(f, v string) { changes[f] = &v }
				n := fmt.Sprintf("n%d", rnd.Intn(6))
				switch rnd.Intn(6) {
				case 0:
					set(n, `{"a":[{"ip":"10.9.9.9"}],"mx":[{"host":"`+n+`.`+gz.name+`","preference":5}]}`)
				case 1:
					set(n, `{"ns":[{"host":"ns.`+n+`.`+gz.name+`"}]}`) // a delegation
					set("ns."+n, `{"a":[{"ip":"10.8.8.8"}]}`)          // its glue
				case 2:
					set(n, `{"cname":[{"host":"`+n+`x.`+gz.name+`"}]}`)
				case 3:
					set(strings.ToUpper(n), `{"txt":[{"text":"upper"}]}`)
				default:
					changes[n] = nil
					changes["ns."+n] = nil
					changes[strings.ToUpper(n)] = nil
				}
				for f := range changes {
					names = append(names, f+"."+gz.name, "x."+f+"."+gz.name)
				}
				next := applyChanges(bz, changes, def, lim, nolog)
				if next == nil {
					t.Fatalf("seed %d step %d: no incremental update", seed, step)
				}
				incremental++
				checkIndex(t, next)
				direct += sameAsLookup(t, next, names)
				bz = next
			}
		}
	}
	if direct < 500 {
		t.Fatalf("only %d answers were taken from the index", direct)
	}
	t.Logf("%d answers from the index, %d incremental versions", direct, incremental)
}

// TestNameIndex checks the trie against a map through inserts, replacements and removals,
// including names whose hashes collide entirely (a fixed hash for every name).
func TestNameIndex(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	elem := func(name string) *tree.Elem {
		tr := &tree.Tree{}
		tr.Insert(&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET}})
		return tr.Root.Elem
	}
	x := newNameIndex()
	want := map[string]*tree.Elem{}
	var versions []*nameIndex
	var snapshots []map[string]*tree.Elem
	for i := 0; i < 20000; i++ {
		name := fmt.Sprintf("h%d.example.", rnd.Intn(3000))
		if rnd.Intn(3) == 0 {
			x = x.without(name)
			delete(want, name)
		} else {
			e := elem(name)
			x = x.with(e, false)
			want[name] = e
		}
		if i%2000 == 0 {
			snap := map[string]*tree.Elem{}
			for k, v := range want {
				snap[k] = v
			}
			versions, snapshots = append(versions, x), append(snapshots, snap)
		}
	}
	versions, snapshots = append(versions, x), append(snapshots, want)
	// Every version still answers as it did: nothing modified a served node.
	for v, x := range versions {
		if x.size != len(snapshots[v]) {
			t.Fatalf("version %d: size %d, want %d", v, x.size, len(snapshots[v]))
		}
		for i := 0; i < 3000; i++ {
			name := fmt.Sprintf("h%d.example.", i)
			if got := x.get(name); got != snapshots[v][name] {
				t.Fatalf("version %d: %s gives %v, want %v", v, name, got, snapshots[v][name])
			}
		}
	}
	// Full collisions: every name in one list below the hash's last level.
	c := &nameIndex{fixedHash: func(string) uint64 { return 42 }}
	list := map[string]*tree.Elem{}
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("c%d.example.", i)
		list[name] = elem(name)
		c = c.with(list[name], false)
	}
	for i := 0; i < 200; i += 2 {
		name := fmt.Sprintf("c%d.example.", i)
		c = c.without(name)
		delete(list, name)
	}
	if c.size != 100 {
		t.Fatalf("collision list: size %d, want 100", c.size)
	}
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("c%d.example.", i)
		got := c.get(name)
		if got != list[name] {
			t.Fatalf("collision list: %s gives %v, want %v", name, got, list[name])
		}
	}
}
