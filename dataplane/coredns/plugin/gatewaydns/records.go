package gatewaydns

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// recordSet is one owner's value in a zone hash (data-plane spec §1.5). Each type stays raw
// so that one bad element costs only that element, not the whole owner: the third-party
// plugins dropped every record of an owner when one IP failed to parse. encoding/json
// matches these keys case-insensitively, exactly as the Go writers and readers did.
type recordSet struct {
	A     json.RawMessage `json:"a"`
	AAAA  json.RawMessage `json:"aaaa"`
	TXT   json.RawMessage `json:"txt"`
	CNAME json.RawMessage `json:"cname"`
	NS    json.RawMessage `json:"ns"`
	MX    json.RawMessage `json:"mx"`
	SRV   json.RawMessage `json:"srv"`
	CAA   json.RawMessage `json:"caa"`
	SOA   json.RawMessage `json:"soa"`
}

type addrRecord struct {
	IP  string `json:"ip"`
	TTL uint32 `json:"ttl"`
}

type hostRecord struct {
	Host string `json:"host"`
	TTL  uint32 `json:"ttl"`
}

type txtRecord struct {
	Text string `json:"text"`
	TTL  uint32 `json:"ttl"`
}

type mxRecord struct {
	Host       string `json:"host"`
	Preference uint16 `json:"preference"`
	TTL        uint32 `json:"ttl"`
}

type srvRecord struct {
	Priority uint16 `json:"priority"`
	Weight   uint16 `json:"weight"`
	Port     uint16 `json:"port"`
	Target   string `json:"target"`
	TTL      uint32 `json:"ttl"`
}

type caaRecord struct {
	Flag  uint8  `json:"flag"`
	Tag   string `json:"tag"`
	Value string `json:"value"`
	TTL   uint32 `json:"ttl"`
}

type soaRecord struct {
	NS      string `json:"ns"`
	MBox    string `json:"MBox"`
	Refresh uint32 `json:"refresh"`
	Retry   uint32 `json:"retry"`
	Expire  uint32 `json:"expire"`
	MinTTL  uint32 `json:"minttl"`
	TTL     uint32 `json:"ttl"`
}

// ownerRecords is what one hash field decodes to: the RRs to insert, the apex SOA data when
// the field is the apex and carries one, and the problems found on the way (each skipped).
type ownerRecords struct {
	rrs      []dns.RR
	soa      *soaRecord
	problems []string
}

// parseOwner decodes the JSON value of the owner name `owner` (an FQDN). ttlCap is the
// configured ttl: it is the TTL of records without one and the upper bound of all others,
// as in the third-party plugin, so that a change reaches resolvers within that time.
func parseOwner(owner string, apex bool, value []byte, ttlCap uint32) ownerRecords {
	p := &ownerParser{owner: owner, ttlCap: ttlCap}
	var set recordSet
	if err := json.Unmarshal(value, &set); err != nil {
		p.problem("value is not a JSON record-set object: %v", err)
		return p.out
	}
	p.addresses(set.A, "a")
	p.addresses(set.AAAA, "aaaa")
	p.texts(set.TXT)
	p.hosts(set.NS, "ns")
	p.mailExchangers(set.MX)
	p.services(set.SRV)
	p.authorizations(set.CAA)
	p.aliases(set.CNAME, apex)
	p.startOfAuthority(set.SOA, apex)
	return p.out
}

// ownerParser collects one owner's records and problems, one method per record type.
type ownerParser struct {
	owner  string
	ttlCap uint32
	out    ownerRecords
}

func (p *ownerParser) problem(format string, args ...any) {
	p.out.problems = append(p.out.problems, fmt.Sprintf(format, args...))
}

func (p *ownerParser) hdr(t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: p.owner, Rrtype: t, Class: dns.ClassINET, Ttl: effectiveTTL(ttl, p.ttlCap)}
}

// each decodes every element of the array raw into a fresh T and hands it to fn, which
// returns the record to serve or why the element is skipped ("" and nil: skipped silently).
func each[T any](p *ownerParser, raw json.RawMessage, kind string, fn func(r *T) (dns.RR, string)) []dns.RR {
	var rrs []dns.RR
	eachElem(raw, kind, &p.out, func(i int, elem json.RawMessage) {
		var r T
		if err := json.Unmarshal(elem, &r); err != nil {
			p.problem("%s[%d]: %s", kind, i, err.Error())
			return
		}
		rr, why := fn(&r)
		if why != "" {
			p.problem("%s[%d]: %s", kind, i, why)
		}
		if rr != nil {
			rrs = append(rrs, rr)
		}
	})
	return rrs
}

// addresses decodes `a` (IPv4) or `aaaa` (IPv6). An empty address is skipped silently, as
// the Go plugins did.
func (p *ownerParser) addresses(raw json.RawMessage, kind string) {
	p.out.rrs = append(p.out.rrs, each(p, raw, kind, func(r *addrRecord) (dns.RR, string) {
		if r.IP == "" {
			return nil, ""
		}
		ip, err := netip.ParseAddr(r.IP)
		if kind == "a" {
			if err != nil || !ip.Is4() {
				return nil, fmt.Sprintf("%q is not an IPv4 address", r.IP)
			}
			return &dns.A{Hdr: p.hdr(dns.TypeA, r.TTL), A: ip.AsSlice()}, ""
		}
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return nil, fmt.Sprintf("%q is not an IPv6 address", r.IP)
		}
		return &dns.AAAA{Hdr: p.hdr(dns.TypeAAAA, r.TTL), AAAA: ip.AsSlice()}, ""
	})...)
}

func (p *ownerParser) texts(raw json.RawMessage) {
	p.out.rrs = append(p.out.rrs, each(p, raw, "txt", func(r *txtRecord) (dns.RR, string) {
		return &dns.TXT{Hdr: p.hdr(dns.TypeTXT, r.TTL), Txt: splitTXT(r.Text)}, ""
	})...)
}

// hostRRs decodes an array of {host, ttl} into records made by mk (NS here, CNAME below).
func (p *ownerParser) hostRRs(raw json.RawMessage, kind string, mk func(dns.RR_Header, string) dns.RR, t uint16) []dns.RR {
	return each(p, raw, kind, func(r *hostRecord) (dns.RR, string) {
		host, err := targetName(r.Host)
		if err != nil {
			return nil, err.Error()
		}
		return mk(p.hdr(t, r.TTL), host), ""
	})
}

func (p *ownerParser) hosts(raw json.RawMessage, kind string) {
	p.out.rrs = append(p.out.rrs, p.hostRRs(raw, kind, func(h dns.RR_Header, host string) dns.RR {
		return &dns.NS{Hdr: h, Ns: host}
	}, dns.TypeNS)...)
}

func (p *ownerParser) mailExchangers(raw json.RawMessage) {
	p.out.rrs = append(p.out.rrs, each(p, raw, "mx", func(r *mxRecord) (dns.RR, string) {
		host, err := targetName(r.Host)
		if err != nil {
			return nil, err.Error()
		}
		return &dns.MX{Hdr: p.hdr(dns.TypeMX, r.TTL), Preference: r.Preference, Mx: host}, ""
	})...)
}

func (p *ownerParser) services(raw json.RawMessage) {
	p.out.rrs = append(p.out.rrs, each(p, raw, "srv", func(r *srvRecord) (dns.RR, string) {
		target, err := targetName(r.Target)
		if err != nil {
			return nil, err.Error()
		}
		return &dns.SRV{Hdr: p.hdr(dns.TypeSRV, r.TTL), Priority: r.Priority, Weight: r.Weight,
			Port: r.Port, Target: target}, ""
	})...)
}

func (p *ownerParser) authorizations(raw json.RawMessage) {
	p.out.rrs = append(p.out.rrs, each(p, raw, "caa", func(r *caaRecord) (dns.RR, string) {
		if !isCAATag(r.Tag) {
			return nil, fmt.Sprintf("tag %q must be 1-15 letters or digits", r.Tag)
		}
		return &dns.CAA{Hdr: p.hdr(dns.TypeCAA, r.TTL), Flag: r.Flag, Tag: r.Tag, Value: escapeText(r.Value)}, ""
	})...)
}

// aliases applies RFC 1034 §3.6.2: a CNAME owner has no other data, and one CNAME only; the
// apex (which has SOA and NS) cannot be an alias.
func (p *ownerParser) aliases(raw json.RawMessage, apex bool) {
	cnames := p.hostRRs(raw, "cname", func(h dns.RR_Header, host string) dns.RR {
		return &dns.CNAME{Hdr: h, Target: host}
	}, dns.TypeCNAME)
	if len(cnames) == 0 {
		return
	}
	if apex {
		p.problem("cname at the zone apex is not allowed; ignored")
		return
	}
	if len(cnames) > 1 {
		p.problem("more than one cname; only the first is served")
	}
	if len(p.out.rrs) > 0 {
		p.problem("cname next to other records; only the cname is served")
	}
	p.out.rrs = cnames[:1]
}

// startOfAuthority keeps the stored SOA object of the apex; makeSOA completes it.
func (p *ownerParser) startOfAuthority(raw json.RawMessage, apex bool) {
	if t := bytesTrim(raw); len(t) == 0 || string(t) == "null" {
		return
	}
	var r soaRecord
	switch {
	case !apex:
		p.problem("soa outside the zone apex is ignored")
	case json.Unmarshal(raw, &r) != nil:
		p.problem("soa is not a valid SOA object; a synthesised SOA is served")
	default:
		p.out.soa = &r
	}
}

// eachElem decodes raw as a JSON array and calls fn per element. A value that is not an
// array is a problem (the plugin README's single-object form never worked upstream either).
func eachElem(raw json.RawMessage, kind string, out *ownerRecords, fn func(int, json.RawMessage)) {
	t := bytesTrim(raw)
	if len(t) == 0 || string(t) == "null" {
		return
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(t, &elems); err != nil {
		out.problems = append(out.problems, fmt.Sprintf("%s: must be a JSON array of records", kind))
		return
	}
	for i, e := range elems {
		fn(i, e)
	}
}

func bytesTrim(b []byte) []byte {
	return []byte(strings.TrimSpace(string(b)))
}

// effectiveTTL applies the third-party plugin's rule: records without TTL get the configured
// ttl, others the smaller of both.
func effectiveTTL(ttl, ttlCap uint32) uint32 {
	if ttl == 0 || ttl > ttlCap {
		return ttlCap
	}
	return ttl
}

// targetName makes host an absolute, lowercase domain name. The Go plugins sent names without
// the final dot unpacked, which made the whole reply fail silently (spec §1.9 item 8).
func targetName(host string) (string, error) {
	if host == "" {
		return "", fmt.Errorf("empty host name")
	}
	name := dns.Fqdn(strings.ToLower(host))
	if !validName(name) {
		return "", fmt.Errorf("%q is not a valid host name", host)
	}
	return name, nil
}

// validName accepts absolute names made of letters, digits, '-', '_' and '*' labels, at
// most 255 octets, each label 1-63 octets. Anything else (spaces, escapes, empty labels) in
// a redis field would need zone-file escaping that no writer of this data uses.
func validName(name string) bool {
	if name == "." {
		return true
	}
	if len(name) > 254 || !strings.HasSuffix(name, ".") {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '-' || c == '_' || c == '*'
			if !ok {
				return false
			}
		}
	}
	return true
}

func isCAATag(tag string) bool {
	if len(tag) == 0 || len(tag) > 15 {
		return false
	}
	for _, c := range []byte(tag) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// splitTXT cuts text into the 255-octet character-strings of a TXT record. Unlike the Go
// plugins it adds no empty string after a text of exactly 255·k octets (spec §1.9 item 11),
// and it serves the text literally: a backslash is data, not a zone-file escape.
func splitTXT(text string) []string {
	if text == "" {
		return []string{""}
	}
	var parts []string
	for len(text) > 255 {
		parts = append(parts, escapeText(text[:255]))
		text = text[255:]
	}
	return append(parts, escapeText(text))
}

// escapeText turns raw bytes into miekg/dns's escaped string form, in which a backslash
// starts an escape when the record is packed.
func escapeText(s string) string {
	return strings.ReplaceAll(s, `\`, `\\`)
}
