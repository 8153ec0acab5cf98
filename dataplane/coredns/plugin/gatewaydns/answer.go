package gatewaydns

import (
	"context"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin/file"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// lookup answers qname (lowercase, in the zone) as file's Lookup does, with the negative
// answers' SOA of RFC 2308 §3 (negativeSOA).
//
// Most queries ask for a name that exists, with no delegation or DNAME above it: file's
// Lookup then searches its tree once per label from the apex down, comparing names label by
// label on every level, only to return the element's records of the type asked (or NODATA
// when it has none). Those are answered here from the element found by the version's
// nameIndex, with the same sections Lookup returns: the records (the tree's own slice), the
// apex NS in the authority section, nothing additional; for NODATA the negative SOA. Every
// other case goes to Lookup: a zone with delegations or DNAMEs below the apex, the apex
// itself (SOA and NS answers), a name that is not in the tree (NXDOMAIN, wildcards, empty
// non-terminals), a CNAME (chains), types with additional-section processing (MX, SRV, SVCB,
// HTTPS), DNSSEC OK queries, and a CNAME chase nested too deeply.
// TestDirectAnswersEqualLookup (answer_test.go) checks that both give the same answers.
func (bz *builtZone) lookup(ctx context.Context, state request.Request, qname string) ([]dns.RR, []dns.RR, []dns.RR, file.Result) {
	if rrs, ns, ok := bz.direct(ctx, state, qname); ok {
		if len(rrs) == 0 {
			return nil, ns, nil, file.NoData
		}
		return rrs, ns, nil, file.Success
	}
	answer, ns, extra, result := bz.zone.Lookup(ctx, state, qname)
	return answer, negativeSOA(ns, bz.negSOA), extra, result
}

// direct returns the answer and authority sections for qname from its element, and false
// when file's Lookup must answer (see lookup).
func (bz *builtZone) direct(ctx context.Context, state request.Request, qname string) ([]dns.RR, []dns.RR, bool) {
	if bz.specials != 0 || qname == bz.name || bz.zone.SOA == nil {
		return nil, nil, false
	}
	e := bz.index.get(qname)
	if e == nil {
		return nil, nil, false
	}
	qtype := state.QType()
	if qtype != dns.TypeCNAME && len(e.Type(dns.TypeCNAME)) > 0 {
		return nil, nil, false
	}
	if state.Do() {
		return nil, nil, false
	}
	if loop, _ := ctx.Value(dnsserver.LoopKey{}).(int); loop > 8 {
		return nil, nil, false
	}
	rrs := e.Type(qtype)
	if len(rrs) == 0 {
		return nil, bz.negNs, true
	}
	switch qtype {
	case dns.TypeMX, dns.TypeSRV, dns.TypeSVCB, dns.TypeHTTPS:
		return nil, nil, false
	}
	return rrs, bz.zone.NS, true
}
