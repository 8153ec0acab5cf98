// Package gatewaydns is the gateway's authoritative DNS: it serves every zone the agent
// writes in redis (one hash per zone, data-plane spec §1.4-1.5) from memory.
//
// Each zone is built into CoreDNS's own plugin/file Zone and answered with its Lookup, so
// negative answers carry the SOA, missing types are NODATA, wildcards and delegations follow
// the RFCs exactly as a zone file served by CoreDNS would. Zones are kept current by redis
// keyspace notifications and the agent's channel, with full resyncs on start, on reconnect
// and periodically; no query ever waits for redis.
package gatewaydns

import (
	"context"
	"net"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/file"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

const pluginName = "gatewaydns"

var log = clog.NewWithPlugin(pluginName)

// zoneSet is the set of served zones. Which zones exist is immutable: adding or removing a
// zone builds a new set and swaps the pointer. A new version of an existing zone is swapped
// into its zoneRef, without copying the set. Queries never lock and never see a half-built
// zone.
type zoneSet struct {
	zones map[string]*zoneRef
}

// zoneRef holds the version of one zone in service.
type zoneRef struct{ p atomic.Pointer[builtZone] }

func newZoneRef(bz *builtZone) *zoneRef {
	r := &zoneRef{}
	r.p.Store(bz)
	return r
}

// get returns the version of zone name in service (nil when it is not served).
func (s *zoneSet) get(name string) *builtZone {
	if s == nil {
		return nil
	}
	if r := s.zones[name]; r != nil {
		return r.p.Load()
	}
	return nil
}

// match returns the zone with the longest name that contains qname (an FQDN, lowercase).
func (s *zoneSet) match(qname string) *builtZone {
	if s == nil || len(s.zones) == 0 {
		return nil
	}
	for off, end := 0, false; !end; off, end = dns.NextLabel(qname, off) {
		if r, ok := s.zones[qname[off:]]; ok {
			return r.p.Load()
		}
	}
	return nil
}

// names lists the served zones in sorted order.
func (s *zoneSet) names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.zones))
	for n := range s.zones {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// GatewayDNS is the plugin handler.
type GatewayDNS struct {
	Next plugin.Handler

	zones  atomic.Pointer[zoneSet]
	loaded atomic.Bool // a full load from redis has succeeded at least once

	transferTo  []*net.IPNet // empty: zone transfers refused
	transferAll bool
}

// Name implements plugin.Handler.
func (g *GatewayDNS) Name() string { return pluginName }

// Ready implements the ready plugin's Readiness: ready once the first full load is done.
func (g *GatewayDNS) Ready() bool { return g.loaded.Load() }

// ServeDNS implements plugin.Handler.
//
// Names outside every redis zone go to the next plugin (a `forward` after gatewaydns may
// resolve them); without a next plugin they are REFUSED, as CoreDNS's file plugin does for
// names it is not authoritative for. Until the first full load succeeds every query is
// SERVFAIL, so that resolvers retry instead of caching a wrong negative answer.
func (g *GatewayDNS) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	if !g.loaded.Load() {
		return dns.RcodeServerFailure, nil
	}
	qname := state.Name()
	bz := g.zones.Load().match(qname)
	if bz == nil {
		if g.Next == nil {
			return dns.RcodeRefused, nil
		}
		return plugin.NextOrFailure(g.Name(), g.Next, ctx, w, r)
	}
	switch state.QType() {
	case dns.TypeAXFR, dns.TypeIXFR:
		return g.transfer(state, bz)
	}
	if r.Opcode != dns.OpcodeQuery {
		return dns.RcodeNotImplemented, nil
	}

	answer, ns, extra, result := bz.lookup(ctx, state, qname)

	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.Answer, m.Ns, m.Extra = answer, ns, extra
	switch result {
	case file.NameError:
		m.Rcode = dns.RcodeNameError
	case file.Delegation:
		// A referral is not authoritative; a partial answer with an in-zone alias keeps AA.
		if len(m.Answer) == 0 {
			m.Authoritative = false
		}
	case file.ServerFailure:
		// Only a CNAME whose target could not be resolved elsewhere gets here with an
		// answer; send the CNAME with the target's rcode (RFC 6604 §3).
		if len(m.Answer) == 0 {
			return dns.RcodeServerFailure, nil
		}
		m.Rcode = dns.RcodeServerFailure
	}
	if err := w.WriteMsg(m); err != nil {
		log.Debugf("write reply: %v", err)
	}
	return dns.RcodeSuccess, nil
}

// negativeSOA gives the SOA of a negative answer the TTL RFC 2308 §3 asks for, min(SOA TTL,
// SOA MINIMUM): the file plugin's Lookup sends the zone's SOA record itself. Only negative
// answers (NXDOMAIN, NODATA, also at the end of a CNAME chain) carry the SOA in the
// authority section.
func negativeSOA(ns []dns.RR, neg *dns.SOA) []dns.RR {
	for i, rr := range ns {
		if _, ok := rr.(*dns.SOA); ok && neg != nil {
			out := slices.Clone(ns)
			out[i] = neg
			return out
		}
	}
	return ns
}

// transfer answers AXFR/IXFR for an exact zone name from an allowed client; everything
// else is REFUSED. IXFR is answered as a full transfer unless the serial is current.
func (g *GatewayDNS) transfer(state request.Request, bz *builtZone) (int, error) {
	if state.Proto() != "tcp" || state.Name() != bz.name || !g.transferAllowed(state.IP()) {
		return dns.RcodeRefused, nil
	}
	var serial uint32
	if state.QType() == dns.TypeIXFR && len(state.Req.Ns) > 0 {
		if soa, ok := state.Req.Ns[0].(*dns.SOA); ok {
			serial = soa.Serial
		}
	}
	batches, err := bz.zone.Transfer(serial)
	if err != nil {
		return dns.RcodeServerFailure, err
	}
	// The zone is bounded (max_records_per_zone), so the envelopes are built up front and the
	// channel never blocks, whatever happens to the connection.
	const perEnvelope = 500
	var envelopes []*dns.Envelope
	var pending []dns.RR
	for rrs := range batches {
		pending = append(pending, rrs...)
		if len(pending) >= perEnvelope {
			envelopes = append(envelopes, &dns.Envelope{RR: pending})
			pending = nil
		}
	}
	if len(pending) > 0 {
		envelopes = append(envelopes, &dns.Envelope{RR: pending})
	}
	out := make(chan *dns.Envelope, len(envelopes))
	for _, e := range envelopes {
		out <- e
	}
	close(out)
	if err := new(dns.Transfer).Out(state.W, state.Req, out); err != nil {
		return dns.RcodeServerFailure, err
	}
	state.W.Hijack()
	return dns.RcodeSuccess, nil
}

func (g *GatewayDNS) transferAllowed(ip string) bool {
	if g.transferAll {
		return true
	}
	addr := net.ParseIP(strings.TrimSpace(ip))
	if addr == nil {
		return false
	}
	for _, n := range g.transferTo {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// install publishes a new zone set.
func (g *GatewayDNS) install(s *zoneSet) { g.zones.Store(s) }

// current returns the zone set in service (never nil).
func (g *GatewayDNS) current() *zoneSet {
	if s := g.zones.Load(); s != nil {
		return s
	}
	return &zoneSet{zones: map[string]*zoneRef{}}
}
