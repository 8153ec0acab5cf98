package gatewaydns

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/coredns/coredns/plugin/file"
	"github.com/coredns/coredns/plugin/file/tree"
	"github.com/coredns/coredns/plugin/pkg/upstream"
	"github.com/miekg/dns"
)

// Defaults of the synthesised SOA (RFC 1912 §2.2 ranges). The negative-caching TTL is short
// on purpose: names appear within milliseconds here, resolvers should not remember their
// absence for long.
const (
	defaultRefresh = 7200
	defaultRetry   = 1800
	defaultExpire  = 1209600
	defaultMinTTL  = 60
)

// zoneLimits bounds what one zone may cost in memory.
type zoneLimits struct {
	maxRecords    int // resource records per zone, apex SOA/NS included
	maxValueBytes int // bytes of one owner's JSON value
}

// zoneDefaults is the part of the configuration used to complete a zone's apex.
type zoneDefaults struct {
	nameservers []string // FQDNs, served as apex NS when the zone has none
	hostmaster  string   // FQDN of the SOA RNAME; empty means hostmaster.<zone>
	ttl         uint32
}

// builtZone is one zone as served, with the digest of the redis content it came from so
// that a resync can skip zones that did not change.
type builtZone struct {
	name   string
	zone   *file.Zone
	digest [32]byte
	owners map[string]parsedOwner // by hash field, to reuse on the next rebuild

	count     int  // records in the zone (apex SOA/NS not counted)
	truncated bool // max_records_per_zone cut records away
}

// parsedOwner keeps an owner's decoded records with the value they came from. A change to a
// zone rebuilds its tree, but only owners whose value changed are decoded (and their
// problems logged) again. The zone gets copies: file.Zone.Insert normalises the record it is
// given in place, and the previous zone may still be answering queries with its own.
type parsedOwner struct {
	value   string
	name    string // owner FQDN; "" when the field is not a valid name
	skipped bool   // invalid name or oversized value: nothing served
	recs    ownerRecords
}

// contentDigest hashes the hash fields in a canonical order: same content, same digest,
// whatever order redis returned the fields in.
func contentDigest(fields map[string]string) [32]byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	var n [8]byte
	for _, k := range keys {
		binary.BigEndian.PutUint64(n[:], uint64(len(k)))
		h.Write(n[:])
		h.Write([]byte(k))
		binary.BigEndian.PutUint64(n[:], uint64(len(fields[k])))
		h.Write(n[:])
		h.Write([]byte(fields[k]))
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// serialFromDigest derives the SOA serial from the zone content. It is stable across
// restarts and replicas (unlike the clock-based serial of the Go plugins, which changed on
// every query) and changes whenever the content changes.
func serialFromDigest(d [32]byte) uint32 {
	s := binary.BigEndian.Uint32(d[:4])
	if s == 0 {
		s = 1
	}
	return s
}

// ownerName maps a hash field to an FQDN in zone origin. `@` and the empty field written by
// the Go daemon for two-label names are the apex.
func ownerName(field, origin string) (string, bool) {
	f := strings.ToLower(field)
	if f == "@" || f == "" {
		return origin, true
	}
	var name string
	if origin == "." {
		name = f + "."
	} else {
		name = f + "." + origin
	}
	if !validName(name) {
		return "", false
	}
	return name, true
}

// buildZone turns the fields of the redis hash `origin` into a CoreDNS file.Zone. Bad
// owners and records are reported through logf and skipped; the rest of the zone is served.
// prev, when not nil, is the previous build of the same zone with the same defaults.
func buildZone(origin string, fields map[string]string, prev *builtZone, def zoneDefaults, lim zoneLimits,
	logf func(format string, args ...any)) *builtZone {
	digest := contentDigest(fields)
	z := file.NewZone(origin, "")
	z.Upstream = upstream.New()

	owners := make([]string, 0, len(fields))
	for f := range fields {
		owners = append(owners, f)
	}
	// The apex goes first so the record limit never cuts away SOA or NS; then a fixed order
	// so that a truncated zone is the same zone every time.
	sort.Slice(owners, func(i, j int) bool {
		ai, aj := isApexField(owners[i]), isApexField(owners[j])
		if ai != aj {
			return ai
		}
		return owners[i] < owners[j]
	})

	parsed := make(map[string]parsedOwner, len(fields))
	var apexSOA *soaRecord
	count := 0
	truncated := false
	for _, field := range owners {
		value := fields[field]
		po := parseField(origin, field, value, prev, def, lim, logf)
		parsed[field] = po
		if po.skipped {
			continue
		}
		recs := po.recs
		if recs.soa != nil {
			apexSOA = recs.soa
		}
		for _, rr := range recs.rrs {
			if count >= lim.maxRecords {
				truncated = true
				break
			}
			if err := z.Insert(dns.Copy(rr)); err != nil {
				logf("zone %s: owner %q: %v", origin, field, err)
				continue
			}
			count++
		}
	}
	if truncated {
		logf("zone %s: more than max_records_per_zone %d records; the rest is not served",
			origin, lim.maxRecords)
	}

	z.SOA = makeSOA(origin, apexSOA, def, serialFromDigest(digest))
	if len(z.NS) == 0 {
		for _, ns := range def.nameservers {
			z.NS = append(z.NS, &dns.NS{Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeNS,
				Class: dns.ClassINET, Ttl: def.ttl}, Ns: ns})
		}
	}
	return &builtZone{name: origin, zone: z, digest: digest, owners: parsed, count: count, truncated: truncated}
}

// parseField decodes one hash field, reusing prev's result when the value is unchanged.
func parseField(origin, field, value string, prev *builtZone, def zoneDefaults, lim zoneLimits,
	logf func(format string, args ...any)) parsedOwner {
	if old, ok := prev.owner(field); ok && old.value == value {
		return old
	}
	name, ok := ownerName(field, origin)
	if !ok {
		logf("zone %s: owner %q is not a valid name; skipped", origin, field)
		return parsedOwner{value: value, skipped: true}
	}
	if len(value) > lim.maxValueBytes {
		logf("zone %s: owner %q: value of %d bytes exceeds max_value_bytes %d; skipped",
			origin, field, len(value), lim.maxValueBytes)
		return parsedOwner{value: value, name: name, skipped: true}
	}
	recs := parseOwner(name, name == origin, []byte(value), def.ttl)
	for _, p := range recs.problems {
		logf("zone %s: owner %q: %s", origin, field, p)
	}
	return parsedOwner{value: value, name: name, recs: recs}
}

// updateZone derives the new zone from prev when only a few non-apex owners changed, the
// common case of a push. CoreDNS's zone tree must not change under readers, so the tree's
// nodes are copied (no name comparisons, unlike building it again), the changed names are
// removed from the copy and their records inserted anew; unchanged names share their
// (never modified) elements with prev. It returns nil when a full build is needed: the apex
// changed, the record limit is involved, or too much changed.
func updateZone(origin string, fields map[string]string, prev *builtZone, digest [32]byte,
	def zoneDefaults, lim zoneLimits, logf func(format string, args ...any)) *builtZone {
	if prev == nil || prev.truncated || prev.zone.SOA == nil {
		return nil
	}
	changed := map[string]bool{} // owner names whose records must be rebuilt
	mark := func(field string, po parsedOwner, known bool) bool {
		name := po.name
		if !known {
			var ok bool
			if name, ok = ownerName(field, origin); !ok {
				return true // not a name: nothing in the tree
			}
		}
		if name == "" {
			return true
		}
		if name == origin {
			return false
		}
		changed[name] = true
		return true
	}
	for f, v := range fields {
		if old, ok := prev.owners[f]; !ok || old.value != v {
			if !mark(f, parsedOwner{}, false) {
				return nil
			}
		}
	}
	for f, old := range prev.owners {
		if _, ok := fields[f]; !ok && !mark(f, old, true) {
			return nil
		}
	}
	if len(changed) > len(prev.owners)/4+8 {
		return nil
	}

	parsed := make(map[string]parsedOwner, len(fields))
	byName := map[string][]string{}
	count := prev.count
	for _, old := range prev.owners {
		if !old.skipped && changed[old.name] {
			count -= len(old.recs.rrs)
		}
	}
	for f, v := range fields {
		po := parseField(origin, f, v, prev, def, lim, logf)
		parsed[f] = po
		if !po.skipped && changed[po.name] {
			byName[po.name] = append(byName[po.name], f)
			count += len(po.recs.rrs)
		}
	}
	if count > lim.maxRecords {
		return nil
	}

	t := &tree.Tree{Root: cloneNodes(prev.zone.Tree.Root, changed), Count: prev.zone.Tree.Count}
	names := make([]string, 0, len(changed))
	for n := range changed {
		names = append(names, n)
	}
	sort.Strings(names)
	z := file.NewZone(origin, "")
	z.Upstream = upstream.New()
	z.Tree = t
	z.Apex = prev.zone.Apex
	soa := dns.Copy(prev.zone.SOA).(*dns.SOA)
	soa.Serial = serialFromDigest(digest)
	z.SOA = soa
	for _, n := range names {
		t.Delete(placeholder(n)) // the copied node holds only the placeholder: it goes away
		fs := byName[n]
		sort.Strings(fs)
		for _, f := range fs {
			for _, rr := range parsed[f].recs.rrs {
				if err := z.Insert(dns.Copy(rr)); err != nil {
					logf("zone %s: owner %q: %v", origin, f, err)
				}
			}
		}
	}
	return &builtZone{name: origin, zone: z, digest: digest, owners: parsed, count: count}
}

// cloneNodes copies a tree's nodes. The nodes of changed names get a fresh element holding
// one placeholder record, so that deleting it from the copy never touches prev's element.
func cloneNodes(n *tree.Node, changed map[string]bool) *tree.Node {
	if n == nil {
		return nil
	}
	c := &tree.Node{Elem: n.Elem, Color: n.Color, Left: cloneNodes(n.Left, changed), Right: cloneNodes(n.Right, changed)}
	if name := n.Elem.Name(); changed[name] {
		scratch := &tree.Tree{}
		scratch.Insert(placeholder(name))
		c.Elem = scratch.Root.Elem
	}
	return c
}

func placeholder(name string) dns.RR {
	return &dns.NULL{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeNULL, Class: dns.ClassINET}}
}

func (b *builtZone) owner(field string) (parsedOwner, bool) {
	if b == nil {
		return parsedOwner{}, false
	}
	o, ok := b.owners[field]
	return o, ok
}

func isApexField(f string) bool { return f == "@" || f == "" }

// makeSOA completes the zone's SOA from the stored one (if any) and the configuration.
func makeSOA(origin string, stored *soaRecord, def zoneDefaults, serial uint32) *dns.SOA {
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: def.ttl},
		Serial:  serial,
		Refresh: defaultRefresh,
		Retry:   defaultRetry,
		Expire:  defaultExpire,
		Minttl:  min(defaultMinTTL, def.ttl),
	}
	switch {
	case len(def.nameservers) > 0:
		soa.Ns = def.nameservers[0]
	case origin == ".":
		soa.Ns = "ns1."
	default:
		soa.Ns = "ns1." + origin
	}
	if def.hostmaster != "" {
		soa.Mbox = def.hostmaster
	} else if origin == "." {
		soa.Mbox = "hostmaster."
	} else {
		soa.Mbox = "hostmaster." + origin
	}
	if stored == nil {
		return soa
	}
	if n, err := targetName(stored.NS); err == nil {
		soa.Ns = n
	}
	if m, err := targetName(stored.MBox); err == nil {
		soa.Mbox = m
	}
	if stored.Refresh != 0 {
		soa.Refresh = stored.Refresh
	}
	if stored.Retry != 0 {
		soa.Retry = stored.Retry
	}
	if stored.Expire != 0 {
		soa.Expire = stored.Expire
	}
	if stored.MinTTL != 0 {
		soa.Minttl = stored.MinTTL
	}
	soa.Hdr.Ttl = effectiveTTL(stored.TTL, def.ttl)
	return soa
}

// zoneName validates a redis key as a zone name: lowercase, absolute, not the root.
func zoneName(key string) (string, error) {
	switch {
	case key == ".":
		return "", fmt.Errorf("the root zone is not served")
	case key != strings.ToLower(key):
		return "", fmt.Errorf("zone keys must be lowercase")
	case !validName(key) || strings.Contains(key, "*"):
		return "", fmt.Errorf("not a valid zone name")
	}
	return key, nil
}
