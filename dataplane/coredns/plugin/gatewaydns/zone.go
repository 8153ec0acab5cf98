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

// builtZone is one version of a zone as served. Queries read only name, zone and negSOA;
// the rest is the loader's bookkeeping, handed on to the next version of the zone (an
// update moves it instead of copying it, so a change costs what changed, not the zone size).
type builtZone struct {
	name   string
	zone   *file.Zone
	negSOA *dns.SOA // the SOA as negative answers carry it: TTL min(TTL, MINIMUM), RFC 2308 §3
	digest digest   // of the hash content, to agree on serials with other replicas

	owners    map[string]*parsedOwner // by hash field (loader only; moved to the next version)
	mixed     []string                // fields that are not lowercase: they may share a name with another field
	count     int                     // records in the zone (apex SOA/NS not counted)
	truncated bool                    // max_records_per_zone cut records away

	// index holds the elements of zone's tree by name, for the queries whose answer is an
	// element's own records (answer.go); specials counts the elements below the apex with
	// NS or DNAME records, which make file's Lookup answer otherwise.
	index    *nameIndex
	specials int
	negNs    []dns.RR // []dns.RR{negSOA}: the authority section of a negative answer
}

// parsedOwner keeps an owner's decoded records with the value they came from. Only owners
// whose value changed are decoded (and their problems logged) again. Records below the apex
// are the very records the zone's tree holds, in this version and the next ones (see
// insertRR): nothing writes to a record once it is served.
type parsedOwner struct {
	value   string // (its owner name is ownerName(field, zone), not kept: 16 bytes per owner)
	skipped bool   // invalid name or oversized value: nothing served
	rrs     []dns.RR
	soa     *soaRecord // the apex's stored SOA object, if any
}

// serves reports whether the owner of field in zone origin contributes records to name.
func (po *parsedOwner) serves(field, origin, name string) bool {
	if po == nil || po.skipped {
		return false
	}
	n, ok := ownerName(field, origin)
	return ok && n == name
}

// records is the number of records the owner contributes to the zone.
func (po *parsedOwner) records() int {
	if po == nil || po.skipped {
		return 0
	}
	return len(po.rrs)
}

// digest is an order-independent digest of a zone hash: the sum, lane by lane, of a hash of
// every field and value. It is updated per changed field in O(1), and equal content gives
// the same digest on every replica.
type digest [2]uint64

func fieldHash(field, value string) digest {
	// Length-prefixed field and value, hashed from a stack buffer: a whole read digests every
	// field of a zone, so this avoids allocating per field.
	var buf [256]byte
	b := binary.BigEndian.AppendUint64(buf[:0], uint64(len(field)))
	b = append(b, field...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(value)))
	b = append(b, value...)
	sum := sha256.Sum256(b)
	return digest{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])}
}

func (d *digest) add(field, value string) {
	h := fieldHash(field, value)
	d[0] += h[0]
	d[1] += h[1]
}

func (d *digest) sub(field, value string) {
	h := fieldHash(field, value)
	d[0] -= h[0]
	d[1] -= h[1]
}

func (d digest) String() string { return fmt.Sprintf("%016x%016x", d[0], d[1]) }

// contentDigest is the digest of a whole zone hash.
func contentDigest(fields map[string]string) digest {
	var d digest
	for k, v := range fields {
		d.add(k, v)
	}
	return d
}

// diffOwners returns the fields of a zone hash that differ from prev's: the new value, or
// nil for a field that is gone. One map lookup per field.
func diffOwners(fields map[string]string, prev *builtZone) map[string]*string {
	changes := map[string]*string{}
	present := 0
	for f, v := range fields {
		old, ok := prev.owners[f]
		if ok {
			present++
		}
		if !ok || old.value != v {
			changed := v // only changed values escape to the heap
			changes[f] = &changed
		}
	}
	if present < len(prev.owners) {
		for f := range prev.owners {
			if _, ok := fields[f]; !ok {
				changes[f] = nil
			}
		}
	}
	return changes
}

func isLower(f string) bool { return f == strings.ToLower(f) }

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
// prev, when not nil, is the previous build of the same zone with the same defaults: owners
// whose value did not change are not decoded again. The serial is set by setSerial.
func buildZone(origin string, fields map[string]string, prev *builtZone, def zoneDefaults, lim zoneLimits,
	logf func(format string, args ...any)) *builtZone {
	z := file.NewZone(origin, "")
	z.Upstream = upstream.New()
	// The apex goes first so the record limit never cuts away SOA or NS; then a fixed order
	// so that a truncated zone is the same zone every time.
	owners := slices.SortedFunc(maps.Keys(fields), func(a, b string) int {
		if ai, bi := isApexField(a), isApexField(b); ai != bi {
			if ai {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	bz := &builtZone{name: origin, zone: z, owners: make(map[string]*parsedOwner, len(fields))}
	var apexSOA *soaRecord
	for _, field := range owners {
		value := fields[field]
		bz.digest.add(field, value)
		if !isLower(field) {
			bz.mixed = append(bz.mixed, field)
		}
		po := parseField(origin, field, value, prev, def, lim, logf)
		bz.owners[field] = po
		if po.skipped {
			continue
		}
		if po.soa != nil {
			apexSOA = po.soa
		}
		bz.insert(field, po.rrs, lim, logf)
	}
	if bz.truncated {
		logf("zone %s: more than max_records_per_zone %d records; the rest is not served",
			origin, lim.maxRecords)
	}
	z.SOA = makeSOA(origin, apexSOA, def, 0)
	if len(z.NS) == 0 {
		for _, ns := range def.nameservers {
			z.NS = append(z.NS, &dns.NS{Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeNS,
				Class: dns.ClassINET, Ttl: def.ttl}, Ns: ns})
		}
	}
	bz.index = indexTree(z.Tree)
	bz.specials = countSpecial(z.Tree, origin)
	bz.setSerial(0)
	return bz
}

// insert adds an owner's records to a zone being built, within max_records_per_zone.
func (bz *builtZone) insert(field string, rrs []dns.RR, lim zoneLimits, logf func(format string, args ...any)) {
	for _, rr := range rrs {
		if bz.count >= lim.maxRecords {
			bz.truncated = true
			return
		}
		if err := insertRR(bz.zone, bz.name, rr); err != nil {
			logf("zone %s: owner %q: %v", bz.name, field, err)
			continue
		}
		bz.count++
	}
}

// setSerial sets the serial of a version not yet served, and the SOA of its negative answers.
func (bz *builtZone) setSerial(serial uint32) {
	bz.zone.SOA.Serial = serial
	neg := dns.Copy(bz.zone.SOA).(*dns.SOA)
	neg.Hdr.Ttl = min(neg.Hdr.Ttl, neg.Minttl)
	bz.negSOA = neg
	bz.negNs = []dns.RR{neg}
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
		return &parsedOwner{value: value, skipped: true}
	}
	recs := parseOwner(name, name == origin, []byte(value), def.ttl)
	for _, p := range recs.problems {
		logf("zone %s: owner %q: %s", origin, field, p)
	}
	return &parsedOwner{value: value, rrs: slices.Clip(recs.rrs), soa: recs.soa}
}

// insertRR adds an owner's record to a zone. file.Zone.Insert normalises the record it is
// given in place (lowercase owner name and NS, CNAME, MX targets), and the SOA and NS of the
// apex become the zone's own: those go in as copies, as does any record not in normal form
// already (the parser makes names lowercase, so none is in practice). Every other record
// goes into the tree as it is, shared with its parsedOwner and with the versions of the zone
// before and after: a second copy of every record would be a third of the zone's heap.
func insertRR(z *file.Zone, origin string, rr dns.RR) error {
	h := rr.Header()
	if h.Name == origin || !normalised(rr) {
		return z.Insert(dns.Copy(rr))
	}
	z.Tree.Insert(rr)
	return nil
}

// normalised reports whether file.Zone.Insert would leave rr as it is: an owner name without
// upper case or escapes, and so for the targets Insert lowercases; and a type Insert puts
// into the tree.
func normalised(rr dns.RR) bool {
	lower := func(s string) bool { return s == strings.ToLower(s) && !strings.Contains(s, "\\") }
	if !lower(rr.Header().Name) {
		return false
	}
	switch r := rr.(type) {
	case *dns.A, *dns.AAAA, *dns.TXT, *dns.CAA, *dns.SRV:
		return true
	case *dns.NS:
		return lower(r.Ns)
	case *dns.CNAME:
		return lower(r.Target)
	case *dns.MX:
		return lower(r.Mx)
	}
	return false
}

// updateFrom derives the zone for a whole zone hash from prev: prev itself when nothing
// changed, an incremental update when applyChanges can make one, else nil (a full build is
// needed).
func updateFrom(origin string, fields map[string]string, prev *builtZone, def zoneDefaults, lim zoneLimits,
	logf func(format string, args ...any)) *builtZone {
	if prev == nil {
		return nil
	}
	changes := diffOwners(fields, prev)
	if len(changes) == 0 {
		return prev
	}
	return applyChanges(prev, changes, def, lim, logf)
}

// applyChanges derives the next version of a zone from prev and the fields that changed
// (new value, or nil: removed), the common case of a push. Unchanged names share their
// (never modified) tree nodes and elements with prev; only the paths to changed names are
// copied, and prev's bookkeeping is moved to the new version. The work is proportional to
// what changed (times log of the zone size). It returns nil, having changed nothing, when
// a full build is needed: the apex changed, the record limit is involved, or much changed.
func applyChanges(prev *builtZone, changes map[string]*string, def zoneDefaults, lim zoneLimits,
	logf func(format string, args ...any)) *builtZone {
	origin := prev.name
	if prev.truncated || origin == "." || len(changes) > len(prev.owners)/4+8 {
		return nil
	}
	names := map[string]bool{} // owner names whose records must be rebuilt
	for f, v := range changes {
		// the name loses the old value's records, gains the new one's, or both
		if name, ok := ownerName(f, origin); ok && (prev.owners[f] != nil || v != nil) {
			names[name] = true
		}
	}
	if names[origin] {
		return nil
	}
	parsed := make(map[string]*parsedOwner, len(changes))
	count := prev.count
	for f, v := range changes {
		count -= prev.owners[f].records()
		if v != nil {
			parsed[f] = parseField(origin, f, *v, prev, def, lim, logf)
			count += parsed[f].records()
		}
	}
	if count > lim.maxRecords {
		return nil
	}
	next := &builtZone{name: origin, owners: prev.owners, digest: prev.digest, count: count,
		mixed: nextMixed(prev, changes), index: prev.index, specials: prev.specials}
	for f, v := range changes {
		if old := prev.owners[f]; old != nil {
			next.digest.sub(f, old.value)
		}
		if v == nil {
			delete(next.owners, f)
			continue
		}
		next.digest.add(f, *v)
		next.owners[f] = parsed[f]
	}
	prev.owners = nil // moved: prev stays served, but is never updated again
	next.zone = next.rebuildNames(prev.zone, slices.Sorted(maps.Keys(names)), logf)
	next.setSerial(prev.zone.SOA.Serial)
	return next
}

// nextMixed returns the fields that are not lowercase after changes (rare: kept in a list).
func nextMixed(prev *builtZone, changes map[string]*string) []string {
	touched := false
	for f := range changes {
		touched = touched || !isLower(f)
	}
	if !touched {
		return prev.mixed
	}
	var mixed []string
	for _, f := range prev.mixed {
		if _, changed := changes[f]; !changed {
			mixed = append(mixed, f)
		}
	}
	for f, v := range changes {
		if v != nil && !isLower(f) {
			mixed = append(mixed, f)
		}
	}
	return mixed
}

// fieldsOf returns the fields that serve name, in the order a full build inserts them: the
// name's own relative label and the fields that differ from it only in case.
func (bz *builtZone) fieldsOf(name string) []string {
	rel := strings.TrimSuffix(name, "."+bz.name)
	var out []string
	if bz.owners[rel].serves(rel, bz.name, name) {
		out = append(out, rel)
	}
	for _, f := range bz.mixed {
		if strings.ToLower(f) == rel && bz.owners[f].serves(f, bz.name, name) {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// rebuildNames returns a zone that shares prev's tree except for names, whose elements are
// built anew from bz's owners (or removed when no owner serves them any more). bz's index and
// specials, prev's on entry, are updated alike.
func (bz *builtZone) rebuildNames(prev *file.Zone, names []string, logf func(format string, args ...any)) *file.Zone {
	p := newPathCopier(prev.Tree.Count)
	root := prev.Tree.Root
	scratch := file.NewZone(bz.name, "")
	for _, n := range names {
		scratch.Tree = &tree.Tree{}
		for _, f := range bz.fieldsOf(n) {
			for _, rr := range bz.owners[f].rrs {
				if err := insertRR(scratch, bz.name, rr); err != nil {
					logf("zone %s: owner %q: %v", bz.name, f, err)
				}
			}
		}
		// Owner names are plain lowercase (validName: letters, digits, '-', '_', '*'), so the
		// tree's canonical equality is string equality: the index finds n's element, and a
		// new element for n replaces it there.
		old := bz.index.get(n)
		if special(old, bz.name) {
			bz.specials--
		}
		if scratch.Tree.Root == nil {
			root = p.remove(root, n)
			if old != nil {
				bz.index = bz.index.without(old.Name())
			}
		} else {
			e := scratch.Tree.Root.Elem
			root = p.put(root, e)
			if old != nil && old.Name() != e.Name() {
				bz.index = bz.index.without(old.Name())
			}
			bz.index = bz.index.with(e, false)
			if special(e, bz.name) {
				bz.specials++
			}
		}
	}
	z := file.NewZone(bz.name, "")
	z.Upstream = prev.Upstream
	z.Tree = &tree.Tree{Root: root, Count: p.count}
	z.Apex = prev.Apex
	z.SOA = dns.Copy(prev.SOA).(*dns.SOA)
	return z
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
