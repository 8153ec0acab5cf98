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
	var out ownerRecords
	var set recordSet
	if err := json.Unmarshal(value, &set); err != nil {
		out.problems = append(out.problems, fmt.Sprintf("value is not a JSON record-set object: %v", err))
		return out
	}
	hdr := func(t uint16, ttl uint32) dns.RR_Header {
		return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: effectiveTTL(ttl, ttlCap)}
	}
	bad := func(kind string, i int, why string) {
		out.problems = append(out.problems, fmt.Sprintf("%s[%d]: %s", kind, i, why))
	}

	eachElem(set.A, "a", &out, func(i int, raw json.RawMessage) {
		var r addrRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("a", i, err.Error())
			return
		}
		if r.IP == "" {
			return // the Go plugins skipped empty addresses silently too
		}
		ip, err := netip.ParseAddr(r.IP)
		if err != nil || !ip.Is4() {
			bad("a", i, fmt.Sprintf("%q is not an IPv4 address", r.IP))
			return
		}
		out.rrs = append(out.rrs, &dns.A{Hdr: hdr(dns.TypeA, r.TTL), A: ip.AsSlice()})
	})
	eachElem(set.AAAA, "aaaa", &out, func(i int, raw json.RawMessage) {
		var r addrRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("aaaa", i, err.Error())
			return
		}
		if r.IP == "" {
			return
		}
		ip, err := netip.ParseAddr(r.IP)
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			bad("aaaa", i, fmt.Sprintf("%q is not an IPv6 address", r.IP))
			return
		}
		out.rrs = append(out.rrs, &dns.AAAA{Hdr: hdr(dns.TypeAAAA, r.TTL), AAAA: ip.AsSlice()})
	})
	eachElem(set.TXT, "txt", &out, func(i int, raw json.RawMessage) {
		var r txtRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("txt", i, err.Error())
			return
		}
		out.rrs = append(out.rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT, r.TTL), Txt: splitTXT(r.Text)})
	})
	eachElem(set.NS, "ns", &out, func(i int, raw json.RawMessage) {
		var r hostRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("ns", i, err.Error())
			return
		}
		host, err := targetName(r.Host)
		if err != nil {
			bad("ns", i, err.Error())
			return
		}
		out.rrs = append(out.rrs, &dns.NS{Hdr: hdr(dns.TypeNS, r.TTL), Ns: host})
	})
	eachElem(set.MX, "mx", &out, func(i int, raw json.RawMessage) {
		var r mxRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("mx", i, err.Error())
			return
		}
		host, err := targetName(r.Host)
		if err != nil {
			bad("mx", i, err.Error())
			return
		}
		out.rrs = append(out.rrs, &dns.MX{Hdr: hdr(dns.TypeMX, r.TTL), Preference: r.Preference, Mx: host})
	})
	eachElem(set.SRV, "srv", &out, func(i int, raw json.RawMessage) {
		var r srvRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("srv", i, err.Error())
			return
		}
		target, err := targetName(r.Target)
		if err != nil {
			bad("srv", i, err.Error())
			return
		}
		out.rrs = append(out.rrs, &dns.SRV{Hdr: hdr(dns.TypeSRV, r.TTL), Priority: r.Priority,
			Weight: r.Weight, Port: r.Port, Target: target})
	})
	eachElem(set.CAA, "caa", &out, func(i int, raw json.RawMessage) {
		var r caaRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("caa", i, err.Error())
			return
		}
		if !isCAATag(r.Tag) {
			bad("caa", i, fmt.Sprintf("tag %q must be 1-15 letters or digits", r.Tag))
			return
		}
		out.rrs = append(out.rrs, &dns.CAA{Hdr: hdr(dns.TypeCAA, r.TTL), Flag: r.Flag,
			Tag: r.Tag, Value: escapeText(r.Value)})
	})

	var cnames []dns.RR
	eachElem(set.CNAME, "cname", &out, func(i int, raw json.RawMessage) {
		var r hostRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			bad("cname", i, err.Error())
			return
		}
		host, err := targetName(r.Host)
		if err != nil {
			bad("cname", i, err.Error())
			return
		}
		cnames = append(cnames, &dns.CNAME{Hdr: hdr(dns.TypeCNAME, r.TTL), Target: host})
	})
	if len(cnames) > 0 {
		switch {
		case apex:
			out.problems = append(out.problems, "cname at the zone apex is not allowed; ignored")
		default:
			// RFC 1034 §3.6.2: a CNAME owner has no other data, and one CNAME only.
			if len(cnames) > 1 {
				out.problems = append(out.problems, "more than one cname; only the first is served")
			}
			if len(out.rrs) > 0 {
				out.problems = append(out.problems, "cname next to other records; only the cname is served")
			}
			out.rrs = cnames[:1]
		}
	}

	if len(bytesTrim(set.SOA)) > 0 && string(bytesTrim(set.SOA)) != "null" {
		var r soaRecord
		switch {
		case !apex:
			out.problems = append(out.problems, "soa outside the zone apex is ignored")
		case json.Unmarshal(set.SOA, &r) != nil:
			out.problems = append(out.problems, "soa is not a valid SOA object; a synthesised SOA is served")
		default:
			out.soa = &r
		}
	}
	return out
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
