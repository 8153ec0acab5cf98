package gatewaydns

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/file"
	"github.com/miekg/dns"
)

// The differential test: the same generated zones go to redis as the agent writes them
// (JSON per owner) and, rendered independently, to zone-file text served by CoreDNS's own
// file plugin. Every generated query must get the same rcode, flags and sections from both.

// genRec is one record of the generated model, before either rendering.
type genRec struct {
	typ  string
	ttl  uint32 // 0 = none given
	ip   string
	host string // cname/ns/mx/srv target, relative ("www") or absolute ("x.other.")
	text string
	pref uint16 // mx preference, srv priority
	port uint16
	tag  string
}

type genZone struct {
	name   string
	owners map[string][]genRec // field name -> records
	soa    *soaRecord          // stored apex SOA, if any
}

const diffTTL = 300

func (z *genZone) add(owner string, recs ...genRec) {
	z.owners[owner] = append(z.owners[owner], recs...)
}

// generateZones builds a varied set of zones from seed: apex with and without records,
// stored SOA/NS or none, wildcards, deep names (empty non-terminals), delegations with and
// without glue, in-zone and external CNAMEs, every record type, a nested child zone.
func generateZones(seed int64) []*genZone {
	rnd := rand.New(rand.NewSource(seed))
	ip4 := func() string { return fmt.Sprintf("10.%d.%d.%d", rnd.Intn(256), rnd.Intn(256), 1+rnd.Intn(254)) }
	ip6 := func() string { return fmt.Sprintf("2001:db8:%x::%x", rnd.Intn(65536), 1+rnd.Intn(65535)) }
	ttl := func() uint32 { return []uint32{0, 60, 300, 3600}[rnd.Intn(4)] }
	text := func() string {
		chars := `abcdefghijklmnopqrstuvwxyz0123456789 =;"\-_{}:,`
		n := []int{0, 5, 30, 255, 300, 600}[rnd.Intn(6)]
		var b strings.Builder
		for i := 0; i < n; i++ {
			b.WriteByte(chars[rnd.Intn(len(chars))])
		}
		return b.String()
	}
	var zones []*genZone
	nZones := 3 + rnd.Intn(3)
	for zi := 0; zi < nZones; zi++ {
		z := &genZone{name: fmt.Sprintf("zone%d-s%d.test.", zi, seed), owners: map[string][]genRec{}}
		hosts := []string{}
		for hi := 0; hi < 4+rnd.Intn(6); hi++ {
			h := fmt.Sprintf("h%d", hi)
			if rnd.Intn(3) == 0 {
				h = fmt.Sprintf("h%d.d%d", hi, rnd.Intn(3)) // deeper names make empty non-terminals
			}
			hosts = append(hosts, h)
			for _, typ := range []string{"a", "aaaa", "txt", "mx", "srv", "caa"} {
				if rnd.Intn(2) == 0 {
					continue
				}
				for k := 0; k < 1+rnd.Intn(2); k++ {
					r := genRec{typ: typ, ttl: ttl()}
					switch typ {
					case "a":
						r.ip = ip4()
					case "aaaa":
						r.ip = ip6()
					case "txt":
						r.text = text()
					case "mx", "srv":
						r.pref, r.port = uint16(rnd.Intn(50)), uint16(1+rnd.Intn(65000))
						r.host = "mailhost"
						if rnd.Intn(2) == 0 && len(hosts) > 0 {
							r.host = hosts[rnd.Intn(len(hosts))]
						}
						if rnd.Intn(4) == 0 {
							r.host = "ext.example.net."
						}
					case "caa":
						r.tag, r.text = []string{"issue", "issuewild", "iodef"}[rnd.Intn(3)], "ca.example.net"
						r.pref = uint16(rnd.Intn(2) * 128)
					}
					z.add(h, r)
				}
			}
		}
		z.add("mailhost", genRec{typ: "a", ip: ip4()}, genRec{typ: "aaaa", ip: ip6()})
		z.add("__owner__", genRec{typ: "txt", ttl: 600, text: `{"identity":"node","owner":"user"}`})
		// CNAMEs: to a host, a chain, a missing in-zone name, an external name, the apex
		z.add("c1", genRec{typ: "cname", host: hosts[rnd.Intn(len(hosts))], ttl: ttl()})
		z.add("c2", genRec{typ: "cname", host: "c1"})
		z.add("c3", genRec{typ: "cname", host: "missing"})
		z.add("c4", genRec{typ: "cname", host: "www.external.example."})
		z.add("c5", genRec{typ: "cname", host: z.name})
		if rnd.Intn(2) == 0 {
			z.add("*", genRec{typ: "a", ip: ip4()}, genRec{typ: "txt", text: "wild"})
		}
		if rnd.Intn(2) == 0 {
			z.add("*.w", genRec{typ: "aaaa", ip: ip6()})
			z.add("c6", genRec{typ: "cname", host: "x.w"}) // CNAME into a wildcard
		}
		// a delegation with glue below the cut and one with an external name server
		z.add("sub", genRec{typ: "ns", host: "ns.sub"}, genRec{typ: "ns", host: "ns.other.example."})
		z.add("ns.sub", genRec{typ: "a", ip: ip4()})
		z.add("ext", genRec{typ: "ns", host: "ns1.elsewhere.example."})
		switch rnd.Intn(3) {
		case 0: // no apex field at all: SOA and NS synthesised
		case 1:
			z.add("@", genRec{typ: "a", ip: ip4()}, genRec{typ: "mx", host: "mailhost", pref: 5},
				genRec{typ: "txt", text: "v=spf1 -all"})
		case 2:
			z.add("@", genRec{typ: "ns", host: "ns-a.gw.test."}, genRec{typ: "ns", host: "nsin"},
				genRec{typ: "a", ip: ip4()})
			z.add("nsin", genRec{typ: "a", ip: ip4()})
			z.soa = &soaRecord{NS: "ns-a.gw.test.", MBox: "admin.gw.test.", Refresh: 3000, MinTTL: 30, TTL: ttl()}
		}
		zones = append(zones, z)
	}
	// a child zone inside the first zone: longest match must pick it
	child := &genZone{name: "child." + zones[0].name, owners: map[string][]genRec{}}
	child.add("www", genRec{typ: "a", ip: ip4()})
	child.add("@", genRec{typ: "txt", text: "child apex"})
	zones = append(zones, child)
	return zones
}

// fieldsJSON renders a zone as the redis hash the agent writes.
func (z *genZone) fieldsJSON(t *testing.T) map[string]string {
	out := map[string]string{}
	for owner, recs := range z.owners {
		set := map[string]any{}
		for _, r := range recs {
			var v map[string]any
			switch r.typ {
			case "a", "aaaa":
				v = map[string]any{"ip": r.ip}
			case "txt":
				v = map[string]any{"text": r.text}
			case "cname", "ns":
				v = map[string]any{"host": jsonHost(r.host, z.name)}
			case "mx":
				v = map[string]any{"host": jsonHost(r.host, z.name), "preference": r.pref}
			case "srv":
				v = map[string]any{"priority": r.pref, "weight": 1, "port": r.port, "target": jsonHost(r.host, z.name)}
			case "caa":
				v = map[string]any{"flag": r.pref, "tag": r.tag, "value": r.text}
			}
			if r.ttl != 0 {
				v["ttl"] = r.ttl
			}
			list, _ := set[r.typ].([]any)
			set[r.typ] = append(list, v)
		}
		if owner == "@" && z.soa != nil {
			set["soa"] = z.soa
		}
		b, err := json.Marshal(set)
		if err != nil {
			t.Fatal(err)
		}
		out[owner] = string(b)
	}
	return out
}

// jsonHost writes a target the way a writer of this data does: absolute names as they are,
// in-zone names as FQDNs (some without the final dot, which the plugin adds).
func jsonHost(h, zone string) string {
	if strings.HasSuffix(h, ".") {
		return h
	}
	return strings.TrimSuffix(h+"."+zone, ".")
}

// zoneFile renders a zone as RFC 1035 master-file text, independently of the plugin's
// parser: TTL rule, SOA and NS completion are spelled out here again.
func (z *genZone) zoneFile(t *testing.T, serial uint32) string {
	var b strings.Builder
	capTTL := func(ttl uint32) uint32 {
		if ttl == 0 || ttl > diffTTL {
			return diffTTL
		}
		return ttl
	}
	abs := func(h string) string {
		if strings.HasSuffix(h, ".") {
			return h
		}
		return h + "." + z.name
	}
	soa := fmt.Sprintf("%s %d IN SOA ns1.gw.test. hostmaster.gw.test. %d 7200 1800 1209600 60\n", z.name, diffTTL, serial)
	if z.soa != nil {
		soa = fmt.Sprintf("%s %d IN SOA %s %s %d %d 1800 1209600 %d\n", z.name, capTTL(z.soa.TTL),
			z.soa.NS, z.soa.MBox, serial, z.soa.Refresh, z.soa.MinTTL)
	}
	b.WriteString(soa)
	apexNS := false
	for _, r := range z.owners["@"] {
		apexNS = apexNS || r.typ == "ns"
	}
	if !apexNS {
		fmt.Fprintf(&b, "%s %d IN NS ns1.gw.test.\n%s %d IN NS ns2.gw.test.\n", z.name, diffTTL, z.name, diffTTL)
	}
	owners := make([]string, 0, len(z.owners))
	for o := range z.owners {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	for _, o := range owners {
		name := z.name
		if o != "@" {
			name = o + "." + z.name
		}
		for _, r := range z.owners[o] {
			ttl := capTTL(r.ttl)
			switch r.typ {
			case "a":
				fmt.Fprintf(&b, "%s %d IN A %s\n", name, ttl, r.ip)
			case "aaaa":
				fmt.Fprintf(&b, "%s %d IN AAAA %s\n", name, ttl, r.ip)
			case "txt":
				fmt.Fprintf(&b, "%s %d IN TXT %s\n", name, ttl, zoneTXT(r.text))
			case "cname":
				fmt.Fprintf(&b, "%s %d IN CNAME %s\n", name, ttl, abs(r.host))
			case "ns":
				fmt.Fprintf(&b, "%s %d IN NS %s\n", name, ttl, abs(r.host))
			case "mx":
				fmt.Fprintf(&b, "%s %d IN MX %d %s\n", name, ttl, r.pref, abs(r.host))
			case "srv":
				fmt.Fprintf(&b, "%s %d IN SRV %d 1 %d %s\n", name, ttl, r.pref, r.port, abs(r.host))
			case "caa":
				fmt.Fprintf(&b, "%s %d IN CAA %d %s %s\n", name, ttl, r.pref, r.tag, zoneTXT(r.text))
			default:
				t.Fatalf("no zone-file rendering for %s", r.typ)
			}
		}
	}
	return b.String()
}

// zoneTXT quotes text as master-file character-strings of at most 255 octets.
func zoneTXT(text string) string {
	var parts []string
	for {
		chunk := text
		if len(chunk) > 255 {
			chunk = text[:255]
		}
		esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(chunk)
		parts = append(parts, `"`+esc+`"`)
		text = text[len(chunk):]
		if text == "" {
			break
		}
	}
	return strings.Join(parts, " ")
}

// queryNames lists names that exist, do not exist, hit wildcards, empty non-terminals and
// delegations, plus names outside every zone.
func queryNames(zones []*genZone) []string {
	names := []string{"outside.example.org.", "test.", "zone99.test."}
	for _, z := range zones {
		names = append(names, z.name, "missing."+z.name, "a.b.missing."+z.name, "x.w."+z.name,
			"y.x.w."+z.name, "w."+z.name, "host.sub."+z.name, "sub."+z.name, "deep.host.sub."+z.name,
			"ns.sub."+z.name, "ext."+z.name, "a.ext."+z.name, "anything."+z.name, "_tcp."+z.name)
		for o := range z.owners {
			if o == "@" {
				continue
			}
			n := o + "." + z.name
			names = append(names, n, "below."+n)
			if i := strings.Index(o, "."); i > 0 {
				names = append(names, o[i+1:]+"."+z.name) // the empty non-terminal above
			}
		}
	}
	sort.Strings(names)
	return names
}

var diffTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeCNAME, dns.TypeNS, dns.TypeMX,
	dns.TypeSRV, dns.TypeCAA, dns.TypeSOA, dns.TypeHTTPS, dns.TypeSVCB, dns.TypePTR, dns.TypeANY, dns.TypeDS}

// normalise packs and unpacks m (so escapes and compression are in wire form) and renders
// it with each section sorted.
func normalise(t *testing.T, m *dns.Msg) string {
	t.Helper()
	wire, err := m.Pack()
	if err != nil {
		t.Fatalf("reply does not pack: %v\n%v", err, m)
	}
	u := new(dns.Msg)
	if err := u.Unpack(wire); err != nil {
		t.Fatal(err)
	}
	sec := func(rrs []dns.RR) string {
		s := rrStrings(rrs)
		sort.Strings(s)
		return strings.Join(s, "\n    ")
	}
	return fmt.Sprintf("rcode=%s aa=%v tc=%v\n  answer:\n    %s\n  authority:\n    %s\n  additional:\n    %s",
		dns.RcodeToString[u.Rcode], u.Authoritative, u.Truncated, sec(u.Answer), sec(u.Ns), sec(u.Extra))
}

func TestDifferentialAgainstFilePlugin(t *testing.T) {
	r := startRedis(t)
	var all []*genZone
	for seed := int64(1); seed <= 4; seed++ {
		all = append(all, generateZones(seed)...)
	}
	fz := file.Zones{Z: map[string]*file.Zone{}}
	for _, z := range all {
		fields := z.fieldsJSON(t)
		kv := make([]string, 0, 2*len(fields))
		for k, v := range fields {
			kv = append(kv, k, v)
		}
		r.hset(z.name, kv...)
		text := z.zoneFile(t, 1) // the serial is set to the plugin's before each comparison
		parsed, err := file.Parse(strings.NewReader(text), z.name, "generated", 0)
		if err != nil {
			t.Fatalf("zone file for %s does not parse: %v\n%s", z.name, err, text)
		}
		fz.Z[z.name] = parsed
		fz.Names = append(fz.Names, z.name)
	}
	cfg := testConfig(r.addr())
	cfg.ttl = diffTTL
	gw, _ := startPlugin(t, cfg)
	reference := file.File{Zones: fz}
	if got := len(gw.current().zones); got != len(all) {
		t.Fatalf("plugin serves %d zones, want %d", got, len(all))
	}

	compare := func(phase string) {
		for name, z := range fz.Z {
			z.SOA.Serial = gw.current().get(name).zone.SOA.Serial
		}
		compared, mismatches := 0, 0
		kinds := map[string]int{}
		existing := map[string]bool{}
		for _, z := range all {
			existing[z.name] = true
			for o := range z.owners {
				existing[o+"."+z.name] = true
			}
		}
		for _, name := range queryNames(all) {
			for _, qt := range diffTypes {
				ref := rfc2308(ask(t, reference, name, qt))
				kinds[answerKind(ref, existing)]++
				want := normalise(t, ref)
				got := normalise(t, ask(t, plugin.Handler(gw), name, qt))
				compared++
				if got != want {
					mismatches++
					if mismatches <= 5 {
						t.Errorf("%s: %s %s differs\nfile plugin: %s\ngatewaydns:  %s", phase, name,
							dns.TypeToString[qt], want, got)
					}
				}
			}
		}
		if mismatches > 0 {
			t.Fatalf("%s: %d of %d queries differ", phase, mismatches, compared)
		}
		// The generated set must exercise every kind of answer, or the comparison proves little.
		for _, k := range []string{"answer", "nodata", "nxdomain", "referral", "wildcard", "cname", "refused", "glue"} {
			if kinds[k] == 0 {
				t.Errorf("no query produced a %q answer: %v", k, kinds)
			}
		}
		t.Logf("%s: %d queries over %d zones: identical answers; kinds %v", phase, compared, len(all), kinds)
	}
	compare("full load")

	// The same zones again after each was changed and changed back by push: the rebuilt
	// zones (which reuse decoded owners) must answer exactly as before.
	first := map[string]*builtZone{}
	for n := range gw.current().zones {
		first[n] = gw.current().get(n)
	}
	ctx := context.Background()
	for _, z := range all {
		r.hset(z.name, "zz-extra", `{"a":[{"ip":"10.99.99.99"}]}`)
	}
	eventually(t, 10*time.Second, "every zone changed by push", func() error {
		for _, z := range all {
			if m := ask(t, gw, "zz-extra."+z.name, dns.TypeA); len(m.Answer) != 1 {
				return fmt.Errorf("zz-extra.%s not served yet", z.name)
			}
		}
		return nil
	})
	for _, z := range all {
		if err := r.cli.HDel(ctx, z.name, "zz-extra").Err(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "every zone rebuilt by push", func() error {
		for _, z := range all {
			cur := gw.current().get(z.name)
			if cur == nil || cur == first[z.name] || cur.digest != first[z.name].digest {
				return fmt.Errorf("zone %s not rebuilt back to its content yet", z.name)
			}
		}
		return nil
	})
	compare("after push updates")
}

// rfc2308 gives the SOA of a negative answer the TTL min(TTL, MINIMUM) (RFC 2308 §3), the
// one deliberate difference from the file plugin, which sends the SOA with its own TTL.
func rfc2308(m *dns.Msg) *dns.Msg {
	for i, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			c := dns.Copy(soa).(*dns.SOA)
			c.Hdr.Ttl = min(c.Hdr.Ttl, c.Minttl)
			m.Ns[i] = c
		}
	}
	return m
}

// answerKind classifies a reference answer for the coverage check; existing holds the
// owner names that are in the generated data (a positive answer for any other name comes
// from a wildcard).
func answerKind(m *dns.Msg, existing map[string]bool) string {
	switch {
	case m.Rcode == dns.RcodeRefused:
		return "refused"
	case m.Rcode == dns.RcodeNameError:
		return "nxdomain"
	case !m.Authoritative && len(m.Ns) > 0 && len(m.Extra) > 0:
		return "glue"
	case !m.Authoritative && len(m.Ns) > 0:
		return "referral"
	case len(m.Answer) == 0:
		return "nodata"
	case m.Answer[0].Header().Rrtype == dns.TypeCNAME && m.Question[0].Qtype != dns.TypeCNAME:
		return "cname"
	case !existing[m.Question[0].Name]:
		return "wildcard"
	}
	return "answer"
}
