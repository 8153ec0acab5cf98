package acme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"
)

// DNSChannel is where writers of zone hashes announce the fields they changed, as
// "ZONE FIELD..." (dataplane/coredns README): the gatewaydns plugin applies them at once.
const DNSChannel = "tfgateway:dns"

// RedisDNS is a libdns provider for DNS-01 challenges through the gateway's own DNS: it
// adds and removes TXT records in the coredns-redis zone hashes the gatewaydns plugin
// serves (zone hash "<zone>.", field = owner relative to the zone, value = record set
// JSON), then waits until the gateway's DNS server answers with the record, so the ACME
// server is only asked to look once the answer is there. It never creates a zone: a name
// whose zone the gateway does not serve fails with an error saying so.
type RedisDNS struct {
	Client   *redis.Client
	Resolver string        // the gateway's DNS server, host:port
	Wait     time.Duration // how long to wait for the DNS server's answer
	Poll     time.Duration // between DNS queries while waiting
}

type txtRecord struct {
	Text string `json:"text"`
	TTL  uint32 `json:"ttl"`
}

// AppendRecords adds TXT records (the only type it accepts) and waits until they are served.
func (p *RedisDNS) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		rr := rec.RR()
		if rr.Type != "TXT" {
			return out, fmt.Errorf("gateway DNS: only TXT records can be added, not %s", rr.Type)
		}
		err := p.update(ctx, zone, rr.Name, func(txt []txtRecord) []txtRecord {
			if slices.ContainsFunc(txt, func(t txtRecord) bool { return t.Text == rr.Data }) {
				return txt
			}
			return append(txt, txtRecord{Text: rr.Data, TTL: ttlSeconds(rr.TTL)})
		})
		if err != nil {
			return out, err
		}
		if err := p.waitServed(ctx, libdns.AbsoluteName(rr.Name, zone), rr.Data); err != nil {
			return out, err
		}
		out = append(out, libdns.TXT{Name: rr.Name, TTL: rr.TTL, Text: rr.Data})
	}
	return out, nil
}

// DeleteRecords removes TXT records with the given text (any text when Data is empty).
func (p *RedisDNS) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		rr := rec.RR()
		if rr.Type != "" && rr.Type != "TXT" {
			continue
		}
		err := p.update(ctx, zone, rr.Name, func(txt []txtRecord) []txtRecord {
			return slices.DeleteFunc(txt, func(t txtRecord) bool { return rr.Data == "" || t.Text == rr.Data })
		})
		if err != nil {
			return out, err
		}
		out = append(out, libdns.TXT{Name: rr.Name, TTL: rr.TTL, Text: rr.Data})
	}
	return out, nil
}

func ttlSeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 60
	}
	return uint32(max(d/time.Second, 1))
}

// zoneKey is the zone hash of zone: lowercase with the trailing dot.
func zoneKey(zone string) string {
	return strings.ToLower(strings.TrimSuffix(zone, ".")) + "."
}

// update changes the TXT set of one owner in one optimistic transaction (WATCH on the
// zone hash, retried on conflict), keeping any other record types of the owner, and
// announces the field on DNSChannel in the same MULTI.
func (p *RedisDNS) update(ctx context.Context, zone, name string, change func([]txtRecord) []txtRecord) error {
	key := zoneKey(zone)
	field := strings.ToLower(name)
	if field == "" {
		field = "@"
	}
	txn := func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, key).Result()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("gateway DNS: zone %s is not served by this gateway (no redis hash %q)", zone, key)
		}
		cur, err := tx.HGet(ctx, key, field).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		set := map[string]json.RawMessage{}
		if len(cur) > 0 {
			if err := json.Unmarshal(cur, &set); err != nil {
				return fmt.Errorf("gateway DNS: %s field %q holds no record set: %w", key, field, err)
			}
		}
		var txt []txtRecord
		if raw, ok := set["txt"]; ok {
			if err := json.Unmarshal(raw, &txt); err != nil {
				return fmt.Errorf("gateway DNS: %s field %q: bad txt: %w", key, field, err)
			}
		}
		txt = change(txt)
		if len(txt) == 0 {
			delete(set, "txt")
		} else if set["txt"], err = json.Marshal(txt); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			if len(set) == 0 {
				pipe.HDel(ctx, key, field)
			} else {
				value, err := json.Marshal(set)
				if err != nil {
					return err
				}
				pipe.HSet(ctx, key, field, value)
			}
			pipe.Publish(ctx, DNSChannel, key+" "+field)
			return nil
		})
		return err
	}
	for range 20 {
		err := p.Client.Watch(ctx, txn, key)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return fmt.Errorf("gateway DNS: zone %s kept changing; TXT record for %s not written", zone, name)
}

// waitServed polls the gateway's DNS server until it answers fqdn TXT with text.
func (p *RedisDNS) waitServed(ctx context.Context, fqdn, text string) error {
	ctx, cancel := context.WithTimeout(ctx, p.Wait)
	defer cancel()
	client := &dns.Client{Timeout: 2 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(fqdn), dns.TypeTXT)
	var last string
	for {
		in, _, err := client.ExchangeContext(ctx, q, p.Resolver)
		switch {
		case err != nil:
			last = err.Error()
		case in.Rcode != dns.RcodeSuccess:
			last = dns.RcodeToString[in.Rcode]
		default:
			for _, rr := range in.Answer {
				if t, ok := rr.(*dns.TXT); ok && strings.Join(t.Txt, "") == text {
					return nil
				}
			}
			last = "record not in the answer yet"
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gateway DNS: %s TXT not answered by %s within %s (%s)", fqdn, p.Resolver, p.Wait, last)
		case <-time.After(p.Poll):
		}
	}
}
