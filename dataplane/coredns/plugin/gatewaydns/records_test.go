package gatewaydns

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"
)

func TestParseOwnerEveryType(t *testing.T) {
	value := `{"a":[{"ip":"10.0.0.5","ttl":3600},{"ip":"10.0.0.6","ttl":60}],
		"aaaa":[{"ip":"2001:db8::1"}],
		"txt":[{"text":"hello \\ world","ttl":600}],
		"ns":[{"host":"ns.other.test","ttl":100}],
		"mx":[{"host":"mail.example.com.","preference":10}],
		"srv":[{"priority":1,"weight":2,"port":443,"target":"srv.example.com"}],
		"caa":[{"flag":0,"tag":"issue","value":"letsencrypt.org"}]}`
	got := parseOwner("www.example.com.", false, []byte(value), 300)
	if len(got.problems) != 0 {
		t.Fatalf("problems: %v", got.problems)
	}
	want := []string{
		"www.example.com.\t300\tIN\tA\t10.0.0.5",
		"www.example.com.\t60\tIN\tA\t10.0.0.6",
		"www.example.com.\t300\tIN\tAAAA\t2001:db8::1",
		"www.example.com.\t300\tIN\tTXT\t\"hello \\\\ world\"",
		"www.example.com.\t100\tIN\tNS\tns.other.test.",
		"www.example.com.\t300\tIN\tMX\t10 mail.example.com.",
		"www.example.com.\t300\tIN\tSRV\t1 2 443 srv.example.com.",
		"www.example.com.\t300\tIN\tCAA\t0 issue \"letsencrypt.org\"",
	}
	if strings.Join(rrStrings(got.rrs), "\n") != strings.Join(want, "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(rrStrings(got.rrs), "\n"), strings.Join(want, "\n"))
	}
}

// Go's encoding/json matched keys case-insensitively; records written that way still work.
func TestParseOwnerKeysAreCaseInsensitive(t *testing.T) {
	got := parseOwner("x.example.com.", false, []byte(`{"A":[{"IP":"192.0.2.1","TTL":30}],"Txt":[{"Text":"t"}]}`), 300)
	if len(got.rrs) != 2 || got.rrs[0].(*dns.A).A.String() != "192.0.2.1" || got.rrs[0].Header().Ttl != 30 {
		t.Fatalf("got %v problems %v", rrStrings(got.rrs), got.problems)
	}
	apex := parseOwner("example.com.", true, []byte(`{"SOA":{"NS":"ns.example.com.","mbox":"h.example.com.","MinTTL":5}}`), 300)
	if apex.soa == nil || apex.soa.NS != "ns.example.com." || apex.soa.MBox != "h.example.com." || apex.soa.MinTTL != 5 {
		t.Fatalf("soa: %+v", apex.soa)
	}
}

// One bad element costs that element only; the third-party plugins lost the whole owner.
func TestParseOwnerSkipsMalformedElements(t *testing.T) {
	value := `{"a":[{"ip":"300.1.1.1"},{"ip":"10.0.0.1"},{"ip":"2001:db8::1"},{"ip":""},{"ip":5}],
		"aaaa":[{"ip":"10.0.0.1"},{"ip":"2001:db8::2"}],
		"mx":[{"host":"bad name.example.","preference":1},{"host":"ok.example.","preference":2}],
		"srv":{"target":"notarray.example."},
		"caa":[{"tag":"is sue","value":"x"}],
		"cname":"nope",
		"unknown":[1,2,3],
		"txt":[{"text":"kept","ttl":-1},{"text":"kept too"}]}`
	got := parseOwner("h.example.com.", false, []byte(value), 300)
	var kept []string
	for _, rr := range got.rrs {
		kept = append(kept, dns.TypeToString[rr.Header().Rrtype])
	}
	if strings.Join(kept, ",") != "A,AAAA,TXT,MX" {
		t.Fatalf("kept %v (problems %v)", kept, got.problems)
	}
	if len(got.problems) != 9 {
		t.Fatalf("want 9 problems reported, got %d: %v", len(got.problems), got.problems)
	}
	for _, v := range []string{`not json`, `[1,2]`, `"str"`, `{"a":`} {
		if got := parseOwner("h.example.com.", false, []byte(v), 300); len(got.rrs) != 0 || len(got.problems) != 1 {
			t.Errorf("%q: got %v problems %v", v, rrStrings(got.rrs), got.problems)
		}
	}
}

func TestParseOwnerCNAMERules(t *testing.T) {
	got := parseOwner("c.example.com.", false, []byte(
		`{"cname":[{"host":"Target.Example.com"},{"host":"other.example.com."}],"a":[{"ip":"10.0.0.1"}]}`), 300)
	if len(got.rrs) != 1 || got.rrs[0].(*dns.CNAME).Target != "target.example.com." || len(got.problems) != 2 {
		t.Fatalf("got %v problems %v", rrStrings(got.rrs), got.problems)
	}
	apex := parseOwner("example.com.", true, []byte(`{"cname":[{"host":"x.test."}],"a":[{"ip":"10.0.0.1"}]}`), 300)
	if len(apex.rrs) != 1 || apex.rrs[0].Header().Rrtype != dns.TypeA || len(apex.problems) != 1 {
		t.Fatalf("apex: %v problems %v", rrStrings(apex.rrs), apex.problems)
	}
	nonApexSOA := parseOwner("w.example.com.", false, []byte(`{"soa":{"ns":"a.b."}}`), 300)
	if nonApexSOA.soa != nil || len(nonApexSOA.problems) != 1 {
		t.Fatalf("soa outside apex must be ignored: %+v", nonApexSOA)
	}
}

func TestTXTSplitting(t *testing.T) {
	if got := splitTXT(strings.Repeat("a", 255)); len(got) != 1 {
		t.Fatalf("255 bytes must be one string, got %d (the Go plugins added an empty one)", len(got))
	}
	got := splitTXT(strings.Repeat("a", 300))
	if len(got) != 2 || len(got[0]) != 255 || len(got[1]) != 45 {
		t.Fatalf("300 bytes: %d strings", len(got))
	}
	if got := splitTXT(""); len(got) != 1 || got[0] != "" {
		t.Fatalf("empty text: %q", got)
	}
	// The backslash is served as data: pack and unpack gives the original text back.
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: "t.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: splitTXT(`a\065b`)}
	buf := make([]byte, 512)
	off, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := dns.UnpackRR(buf[:off], 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := back.(*dns.TXT).Txt[0]; s != `a\\065b` {
		t.Fatalf("escaped form after unpack %q, want a\\\\065b (the literal text a\\065b)", s)
	}
}

func TestTTLRule(t *testing.T) {
	for _, c := range []struct{ ttl, cap, want uint32 }{{0, 300, 300}, {3600, 300, 300}, {60, 300, 60}, {300, 300, 300}} {
		if got := effectiveTTL(c.ttl, c.cap); got != c.want {
			t.Errorf("effectiveTTL(%d, %d) = %d, want %d", c.ttl, c.cap, got, c.want)
		}
	}
}

func TestZoneNames(t *testing.T) {
	for key, ok := range map[string]bool{"example.com.": true, "a-b.example.": true, ".": false,
		"Example.com.": false, "ex ample.com.": false, "*.example.com.": false, "a..b.": false} {
		if _, err := zoneName(key); (err == nil) != ok {
			t.Errorf("zoneName(%q) err=%v, want ok=%v", key, err, ok)
		}
	}
	for field, want := range map[string]string{"@": "example.com.", "": "example.com.", "WWW": "www.example.com.",
		"*": "*.example.com.", "_ssh._tcp.h": "_ssh._tcp.h.example.com.", "__owner__": "__owner__.example.com.",
		"a b": "", "a..b": "", "x.": ""} {
		got, ok := ownerName(field, "example.com.")
		if got != want || ok != (want != "") {
			t.Errorf("ownerName(%q) = %q,%v want %q", field, got, ok, want)
		}
	}
}

// The content digest ignores field order, sees field/value boundaries, and follows changes
// incrementally (sub then add gives the digest of the new content).
func TestContentDigest(t *testing.T) {
	a := map[string]string{"www": `{"a":[{"ip":"10.0.0.1"}]}`, "@": `{}`}
	b := map[string]string{"@": `{}`, "www": `{"a":[{"ip":"10.0.0.1"}]}`}
	c := map[string]string{"@": `{}`, "www": `{"a":[{"ip":"10.0.0.2"}]}`}
	if contentDigest(a) != contentDigest(b) {
		t.Fatal("same content, different digest")
	}
	// Pinned: serials kept in redis carry this digest, so a change here bumps every zone's
	// serial once and makes replicas of different versions disagree.
	if got := contentDigest(a).String(); got != "c1f0d4cff21acebfa05987081101ac99" {
		t.Fatalf("digest of a known content changed: %s", got)
	}
	if contentDigest(a) == contentDigest(c) {
		t.Fatal("different content, same digest")
	}
	if contentDigest(map[string]string{"ab": "c"}) == contentDigest(map[string]string{"a": "bc"}) {
		t.Fatal("digest ignores field boundaries")
	}
	d := contentDigest(a)
	d.sub("www", a["www"])
	d.add("www", c["www"])
	if d != contentDigest(c) {
		t.Fatal("incremental digest differs from the digest of the content")
	}
}

func TestBuildZoneLimits(t *testing.T) {
	fields := map[string]string{"@": `{"a":[{"ip":"10.0.0.1"}]}`, "big": `{"txt":[{"text":"` + strings.Repeat("x", 200) + `"}]}`}
	for i := 0; i < 10; i++ {
		fields[string(rune('a'+i))] = `{"a":[{"ip":"10.0.0.1"}]}`
	}
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, f) }
	bz := buildZone("example.com.", fields, nil, zoneDefaults{ttl: 300, nameservers: []string{"ns1.gw.test."}},
		zoneLimits{maxRecords: 4, maxValueBytes: 100}, logf)
	n := 0
	for _, e := range bz.zone.All() {
		n += len(e.All())
	}
	// The apex record survives the cut; the big value is skipped; 3 more fit.
	if n != 4 || len(bz.zone.NS) != 1 || bz.zone.SOA == nil {
		t.Fatalf("records %d ns %d soa %v logs %v", n, len(bz.zone.NS), bz.zone.SOA, logs)
	}
	if len(logs) != 2 {
		t.Fatalf("want the size skip and the truncation logged, got %v", logs)
	}
}

func TestSetupParsing(t *testing.T) {
	good := `gatewaydns {
		address 127.0.0.1:6390
		password secret
		db 2
		nameservers NS1.gw.test ns2.gw.test.
		hostmaster hostmaster@gw.test
		ttl 120
		resync 5s
		max_records_per_zone 100
		max_value_bytes 2048
		max_fields_per_zone 300
		coalesce 40ms
		transfer to 127.0.0.1 10.0.0.0/8
	}`
	cfg, err := parseConfig(caddy.NewTestController("dns", good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:6390" || cfg.password != "secret" || cfg.db != 2 || cfg.ttl != 120 ||
		strings.Join(cfg.nameservers, " ") != "ns1.gw.test. ns2.gw.test." || cfg.hostmaster != "hostmaster.gw.test." ||
		cfg.resync.Seconds() != 5 || cfg.maxRecords != 100 || cfg.maxValueBytes != 2048 || len(cfg.transferTo) != 2 ||
		cfg.maxFields != 300 || cfg.coalesce != 40*time.Millisecond {
		t.Fatalf("parsed %+v", cfg)
	}
	def, err := parseConfig(caddy.NewTestController("dns", "gatewaydns"))
	if err != nil || def.addr != "127.0.0.1:6379" || def.transferAll || len(def.transferTo) != 0 || def.resync.Seconds() != 60 ||
		def.maxFields != 100000 || def.maxRecords != 200000 || def.coalesce != 25*time.Millisecond {
		t.Fatalf("defaults: %+v %v", def, err)
	}
	for _, off := range []string{"0", "off", "0s"} {
		c, err := parseConfig(caddy.NewTestController("dns", "gatewaydns {\n coalesce "+off+"\n}"))
		if err != nil || c.coalesce != 0 {
			t.Fatalf("coalesce %s: %+v %v", off, c, err)
		}
	}
	unix, err := parseConfig(caddy.NewTestController("dns", "gatewaydns {\n unix /run/redis.sock\n}"))
	if err != nil || unix.network != "unix" || unix.addr != "/run/redis.sock" {
		t.Fatalf("unix: %+v %v", unix, err)
	}
	bad := map[string]string{
		"gatewaydns example.com":                  "takes no arguments",
		"gatewaydns {\n address nohost\n}":        "HOST:PORT",
		"gatewaydns {\n unix relative\n}":         "absolute",
		"gatewaydns {\n db x\n}":                  "database number",
		"gatewaydns {\n ttl 0\n}":                 "between 1",
		"gatewaydns {\n resync 1ms\n}":            "at least 100ms",
		"gatewaydns {\n nameservers\n}":           "at least one",
		"gatewaydns {\n nameservers a..b\n}":      "not a host name",
		"gatewaydns {\n transfer from x\n}":       "transfer to",
		"gatewaydns {\n transfer to nope\n}":      "IP address or CIDR",
		"gatewaydns {\n prefix x\n}":              "unknown option",
		"gatewaydns {\n password\n}":              "exactly one value",
		"gatewaydns\ngatewaydns":                  "only once",
		"gatewaydns {\n max_value_bytes -1\n}":    "between 1",
		"gatewaydns {\n max_fields_per_zone 0\n}": "between 1",
		"gatewaydns {\n coalesce 20\n}":           "between 0 and 10s",
		"gatewaydns {\n coalesce -1s\n}":          "between 0 and 10s",
		"gatewaydns {\n coalesce 1m\n}":           "between 0 and 10s",
	}
	empty := t.TempDir() + "/empty"
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pwFile := t.TempDir() + "/pw"
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad["gatewaydns {\n password_file "+empty+"\n}"] = "is empty"
	bad["gatewaydns {\n password_file /nonexistent/pw\n}"] = "cannot read the redis password"
	bad["gatewaydns {\n password x\n password_file "+pwFile+"\n}"] = "either password or password_file"
	if c, err := parseConfig(caddy.NewTestController("dns", "gatewaydns {\n password_file "+pwFile+"\n}")); err != nil ||
		c.password != "s3cret" {
		t.Fatalf("password_file: %+v %v", c, err)
	}
	for input, want := range bad {
		_, err := parseConfig(caddy.NewTestController("dns", input))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", input, err, want)
		}
	}
}

func TestUnionFlags(t *testing.T) {
	for have, want := range map[string]string{"": "Kgh$xe", "KEA": "KEA", "AK": "AK", "Ex": "ExKgh$e", "Kgh$xe": "Kgh$xe"} {
		if got := unionFlags(have, keyspaceFlags); got != want {
			t.Errorf("unionFlags(%q) = %q, want %q", have, got, want)
		}
	}
}
