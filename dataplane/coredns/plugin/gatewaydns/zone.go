package gatewaydns

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
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
	owners map[string]*parsedOwner // by hash field, to reuse on the next rebuild (never modified)
	keys   []string                // the hash fields, sorted (the digest's order)
	mixed  []string                // fields that are not lowercase: they may share a name with another field

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
	return digestSorted(sortedFields(fields), fields)
}

func sortedFields(fields map[string]string) []string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// digestSorted is contentDigest with the fields already sorted.
func digestSorted(keys []string, fields map[string]string) [32]byte {
	h := sha256.New()
	buf := make([]byte, 0, 32*1024) // the same bytes as one Write per item, in fewer calls
	for _, k := range keys {
		v := fields[k]
		buf = binary.BigEndian.AppendUint64(buf, uint64(len(k)))
		buf = append(buf, k...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(len(v)))
		buf = append(buf, v...)
		if len(buf) >= 28*1024 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// ownerDiff is how a zone hash differs from the fields a zone was built from.
type ownerDiff struct {
	changed []string // fields that are new or have another value
	added   []string // the new ones among them
	removed []string // fields that are gone
}

func (d ownerDiff) empty() bool { return len(d.changed) == 0 && len(d.removed) == 0 }

// diffOwners compares a zone hash with prev's fields: one map lookup per field.
func diffOwners(fields map[string]string, prev *builtZone) ownerDiff {
	var d ownerDiff
	present := 0
	for f, v := range fields {
		old, ok := prev.owners[f]
		if ok {
			present++
		} else {
			d.added = append(d.added, f)
		}
		if !ok || old.value != v {
			d.changed = append(d.changed, f)
		}
	}
	if present < len(prev.owners) {
		for f := range prev.owners {
			if _, ok := fields[f]; !ok {
				d.removed = append(d.removed, f)
			}
		}
	}
	return d
}

// nextKeys returns the sorted fields after d, from prev's sorted fields without sorting
// them again.
func nextKeys(prev *builtZone, d ownerDiff) []string {
	if len(d.added) == 0 && len(d.removed) == 0 {
		return prev.keys
	}
	added := slices.Clone(d.added)
	sort.Strings(added)
	gone := make(map[string]bool, len(d.removed))
	for _, f := range d.removed {
		gone[f] = true
	}
	out := make([]string, 0, len(prev.keys)+len(added)-len(d.removed))
	i := 0
	for _, k := range prev.keys {
		for i < len(added) && added[i] < k {
			out = append(out, added[i])
			i++
		}
		if !gone[k] {
			out = append(out, k)
		}
	}
	return append(out, added[i:]...)
}

func isLower(f string) bool { return f == strings.ToLower(f) }

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

	parsed := make(map[string]*parsedOwner, len(fields))
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
	var mixed []string
	for f := range fields {
		if !isLower(f) {
			mixed = append(mixed, f)
		}
	}
	return &builtZone{name: origin, zone: z, digest: digest, owners: parsed, keys: sortedFields(fields), mixed: mixed,
		count: count, truncated: truncated}
}

// parseField decodes one hash field, reusing prev's result when the value is unchanged.
func parseField(origin, field, value string, prev *builtZone, def zoneDefaults, lim zoneLimits,
	logf func(format string, args ...any)) *parsedOwner {
	if old := prev.owner(field); old != nil && old.value == value {
		return old
	}
	name, ok := ownerName(field, origin)
	if !ok {
		logf("zone %s: owner %q is not a valid name; skipped", origin, field)
		return &parsedOwner{value: value, skipped: true}
	}
	if len(value) > lim.maxValueBytes {
		logf("zone %s: owner %q: value of %d bytes exceeds max_value_bytes %d; skipped",
			origin, field, len(value), lim.maxValueBytes)
		return &parsedOwner{value: value, name: name, skipped: true}
	}
	recs := parseOwner(name, name == origin, []byte(value), def.ttl)
	for _, p := range recs.problems {
		logf("zone %s: owner %q: %s", origin, field, p)
	}
	return &parsedOwner{value: value, name: name, recs: recs}
}

// updateFrom derives the zone for fields from prev: prev itself when nothing changed, an
// incremental update when updateZone can make one, else nil (a full build is needed).
func updateFrom(origin string, fields map[string]string, prev *builtZone, def zoneDefaults, lim zoneLimits,
	logf func(format string, args ...any)) *builtZone {
	if prev == nil {
		return nil
	}
	d := diffOwners(fields, prev)
	if d.empty() {
		return prev
	}
	return updateZone(origin, fields, prev, d, def, lim, logf)
}

// updateZone derives the new zone from prev when only a few non-apex owners changed, the
// common case of a push. CoreDNS's zone tree must not change under readers, so the tree's
// nodes are copied (no name comparisons, unlike building it again), the changed names are
// removed from the copy and their records inserted anew; unchanged names share their
// (never modified) elements with prev. Apart from the copy of the nodes and of the owner
// map, the work is proportional to what changed. It returns nil when a full build is
// needed: the apex changed, the record limit is involved, or too much changed.
func updateZone(origin string, fields map[string]string, prev *builtZone, d ownerDiff,
	def zoneDefaults, lim zoneLimits, logf func(format string, args ...any)) *builtZone {
	if prev == nil || prev.truncated || prev.zone.SOA == nil || origin == "." {
		return nil
	}
	changed, ok := changedNames(origin, prev, d)
	if !ok || len(changed) > len(prev.owners)/4+8 {
		return nil
	}
	parsed := maps.Clone(prev.owners)
	for _, f := range d.removed {
		delete(parsed, f)
	}
	for _, f := range d.changed {
		parsed[f] = parseField(origin, f, fields[f], prev, def, lim, logf)
	}
	u := &zoneUpdate{origin: origin, fields: fields, prev: prev, parsed: parsed, mixed: nextMixed(prev, fields, d)}
	names := slices.Sorted(maps.Keys(changed))
	byName, count := u.regroup(names)
	if count > lim.maxRecords {
		return nil
	}
	keys := nextKeys(prev, d)
	digest := digestSorted(keys, fields)
	z := u.zone(changed, names, byName, serialFromDigest(digest), logf)
	return &builtZone{name: origin, zone: z, digest: digest, owners: parsed, keys: keys, mixed: u.mixed, count: count}
}

// changedNames lists the owner names whose records must be rebuilt; false when the apex
// changed (a full build is needed then).
func changedNames(origin string, prev *builtZone, d ownerDiff) (map[string]bool, bool) {
	changed := map[string]bool{}
	for _, f := range d.changed {
		name, ok := ownerName(f, origin)
		if !ok {
			continue // not a name: nothing in the tree
		}
		if name == origin {
			return nil, false
		}
		changed[name] = true
	}
	for _, f := range d.removed {
		old := prev.owners[f]
		if old.name == "" {
			continue
		}
		if old.name == origin {
			return nil, false
		}
		changed[old.name] = true
	}
	return changed, true
}

// nextMixed returns the fields that are not lowercase after d (rare: kept in a list).
func nextMixed(prev *builtZone, fields map[string]string, d ownerDiff) []string {
	if !touchesMixed(d) {
		return prev.mixed
	}
	var mixed []string
	for _, f := range prev.mixed {
		if _, ok := fields[f]; ok {
			mixed = append(mixed, f)
		}
	}
	for _, f := range d.added {
		if !isLower(f) {
			mixed = append(mixed, f)
		}
	}
	return mixed
}

// zoneUpdate is the state of one incremental update.
type zoneUpdate struct {
	origin string
	fields map[string]string
	prev   *builtZone
	parsed map[string]*parsedOwner // the owners after the update
	mixed  []string                // the fields that are not lowercase after the update
}

// fieldsOf returns the fields of name present per in: the name's own relative label, plus
// the fields that differ from it only in case, taken from list.
func (u *zoneUpdate) fieldsOf(name string, in func(string) bool, list []string) []string {
	rel := strings.TrimSuffix(name, "."+u.origin)
	var out []string
	if in(rel) {
		out = append(out, rel)
	}
	for _, f := range list {
		if strings.ToLower(f) == rel && in(f) {
			out = append(out, f)
		}
	}
	return out
}

// regroup returns the fields that now serve each changed name, and the zone's record count
// after the update.
func (u *zoneUpdate) regroup(names []string) (map[string][]string, int) {
	inNew := func(f string) bool { _, ok := u.fields[f]; return ok }
	inOld := func(f string) bool { _, ok := u.prev.owners[f]; return ok }
	byName := make(map[string][]string, len(names))
	count := u.prev.count
	for _, n := range names {
		for _, f := range u.fieldsOf(n, inOld, u.prev.mixed) {
			if old := u.prev.owners[f]; !old.skipped && old.name == n {
				count -= len(old.recs.rrs)
			}
		}
		fs := u.fieldsOf(n, inNew, u.mixed)
		sort.Strings(fs)
		for _, f := range fs {
			if po := u.parsed[f]; !po.skipped && po.name == n {
				byName[n] = append(byName[n], f)
				count += len(po.recs.rrs)
			}
		}
	}
	return byName, count
}

// zone copies prev's tree and rebuilds the changed names in the copy.
func (u *zoneUpdate) zone(changed map[string]bool, names []string, byName map[string][]string, serial uint32,
	logf func(format string, args ...any)) *file.Zone {
	prev := u.prev.zone
	t := &tree.Tree{Root: cloneNodes(prev.Tree.Root, prev.Tree.Count, changed), Count: prev.Tree.Count}
	z := file.NewZone(u.origin, "")
	z.Upstream = upstream.New()
	z.Tree = t
	z.Apex = prev.Apex
	soa := dns.Copy(prev.SOA).(*dns.SOA)
	soa.Serial = serial
	z.SOA = soa
	for _, n := range names {
		t.Delete(placeholder(n)) // the copied node holds only the placeholder: it goes away
		for _, f := range byName[n] {
			for _, rr := range u.parsed[f].recs.rrs {
				if err := z.Insert(dns.Copy(rr)); err != nil {
					logf("zone %s: owner %q: %v", u.origin, f, err)
				}
			}
		}
	}
	return z
}

// touchesMixed reports whether a diff adds or removes a field that is not lowercase.
func touchesMixed(d ownerDiff) bool {
	for _, f := range d.added {
		if !isLower(f) {
			return true
		}
	}
	for _, f := range d.removed {
		if !isLower(f) {
			return true
		}
	}
	return false
}

// cloneNodes copies a tree's nodes, in one allocation when count is right. The nodes of
// changed names then get a fresh element holding one placeholder record, so that deleting
// it from the copy never touches prev's element.
func cloneNodes(root *tree.Node, count int, changed map[string]bool) *tree.Node {
	slab := make([]tree.Node, 0, count)
	var cp func(n *tree.Node) *tree.Node
	cp = func(n *tree.Node) *tree.Node {
		if n == nil {
			return nil
		}
		var c *tree.Node
		if len(slab) < cap(slab) {
			slab = slab[:len(slab)+1]
			c = &slab[len(slab)-1]
		} else {
			c = &tree.Node{}
		}
		c.Elem, c.Color = n.Elem, n.Color
		c.Left, c.Right = cp(n.Left), cp(n.Right)
		return c
	}
	out := cp(root)
	for name := range changed {
		for n := out; n != nil; {
			c := tree.Less(n.Elem, name)
			if c == 0 {
				scratch := &tree.Tree{}
				scratch.Insert(placeholder(name))
				n.Elem = scratch.Root.Elem
				break
			}
			if c < 0 {
				n = n.Left
			} else {
				n = n.Right
			}
		}
	}
	return out
}

func placeholder(name string) dns.RR {
	return &dns.NULL{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeNULL, Class: dns.ClassINET}}
}

// owner returns the decoded field of b (nil when b or the field does not exist).
func (b *builtZone) owner(field string) *parsedOwner {
	if b == nil {
		return nil
	}
	return b.owners[field]
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
