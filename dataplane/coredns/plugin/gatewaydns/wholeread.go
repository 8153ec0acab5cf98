package gatewaydns

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// wholeJob is one read of whole zone hashes: the zones changed in unknown fields, or every
// zone (a full resync). It runs outside the loader, so that changes whose writers named
// their fields are applied while it runs: a 50,000-field HGETALL takes a hundred
// milliseconds or more on a loaded machine. One runs at a time, which bounds what it holds.
type wholeJob struct {
	all   bool      // every zone (SCAN); else zones
	zones []string  // zone keys to read
	start time.Time // when it began
	// served is the zone set when the job began. Which zones are served does not change
	// while a job runs (only a job's result adds or removes zones), so zones it does not
	// hold are built by the job itself.
	served *zoneSet
}

// zoneRead is what reading one zone key found.
type zoneRead struct {
	hash   map[string]string // the hash; empty when the key is gone or not a hash
	fields int64             // > 0: the hash has this many fields, more than max_fields_per_zone, and was not read
	digest digest            // of hash, for a zone served when the job began
	built  *builtZone        // a zone not served when the job began, built from hash (nil: not servable)
}

// wholeResult is what a wholeJob found: a read per zone key (for a full resync, every zone
// key that exists), or the error that stopped it.
type wholeResult struct {
	job   *wholeJob
	reads map[string]*zoneRead
	err   error
}

// readWhole runs job (in its own goroutine): it reads the hashes, digests those of served
// zones (so the loader can tell in O(fields named meanwhile) that nothing else changed) and
// builds the zones not served yet, which need nothing of the loader's state.
func (s *syncer) readWhole(ctx context.Context, job *wholeJob) *wholeResult {
	res := &wholeResult{job: job, reads: map[string]*zoneRead{}}
	keys := job.zones
	if job.all {
		if keys, res.err = s.scanZones(ctx); res.err != nil {
			return res
		}
	}
	const perPipeline = 100
	for start := 0; start < len(keys); start += perPipeline {
		chunk := keys[start:min(start+perPipeline, len(keys))]
		reads, err := s.readZones(ctx, chunk)
		if err != nil {
			res.err = err
			return res
		}
		for i, k := range chunk {
			rd := reads[i]
			switch {
			case len(rd.hash) == 0:
			case job.served.zones[k] != nil:
				rd.digest = contentDigest(rd.hash)
			default:
				rd.built = s.build(k, rd.hash, nil)
				rd.hash = nil
			}
			res.reads[k] = rd
		}
	}
	if s.readHook != nil {
		s.readHook(res)
	}
	return res
}

// scanZones lists the keys of every hash whose name ends in a dot.
func (s *syncer) scanZones(ctx context.Context) ([]string, error) {
	var keys []string
	seen := map[string]bool{}
	var cursor uint64
	for {
		batch, next, err := s.client.ScanType(ctx, cursor, "*.", 1000, "hash").Result()
		if err != nil {
			return nil, fmt.Errorf("scan zones: %w", err)
		}
		for _, k := range batch {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		if next == 0 {
			return keys, nil
		}
		cursor = next
	}
}

// Hashes with more than scanAbove fields are read a part at a time (HSCAN, about scanCount
// fields per call), so that redis serves other clients in between: one HGETALL of 50,000
// fields holds redis for 60-100 ms on a loaded machine (a part of 2000, 2-4 ms), and named
// changes (HMGET) would wait for it.
const (
	scanAbove = 2000
	scanCount = 2000
)

// readZones reads zone hashes: one round trip asks their sizes (HLEN), then those within
// max_fields_per_zone are read (HGETALL in a second round trip, or HSCAN for large ones), so
// an oversized hash is never transferred. A hash that grew past the limit meanwhile is
// refused as well.
//
// A hash read by HSCAN is not one snapshot: a field changed during the scan may be read
// before or after the change. Such a change is either named (and then read again by the
// loader, which keeps what it read after the whole read began) or sends a keyspace event
// that brings another whole read; fields present throughout the scan are always read.
func (s *syncer) readZones(ctx context.Context, keys []string) ([]*zoneRead, error) {
	out := make([]*zoneRead, len(keys))
	lens := make([]*redis.IntCmd, len(keys))
	pipe := s.client.Pipeline()
	for i, k := range keys {
		out[i] = &zoneRead{}
		lens[i] = pipe.HLen(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // errors are per command, below
	gets := make([]*redis.MapStringStringCmd, len(keys))
	var large []int
	pipe = s.client.Pipeline()
	for i, k := range keys {
		n, err := lens[i].Result()
		if err != nil && !isWrongType(err) {
			return nil, fmt.Errorf("read zone %s: %w", k, err)
		}
		switch {
		case err != nil || n == 0:
		case n > int64(s.cfg.maxFields):
			out[i].fields = n
		case n > scanAbove:
			large = append(large, i)
		default:
			gets[i] = pipe.HGetAll(ctx, k)
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}
	for i, k := range keys {
		if gets[i] == nil {
			continue
		}
		hash, err := gets[i].Result()
		if err != nil && !isWrongType(err) {
			return nil, fmt.Errorf("read zone %s: %w", k, err)
		}
		out[i].hash = hash
	}
	for _, i := range large {
		hash, err := s.scanHash(ctx, keys[i])
		if err != nil {
			return nil, err
		}
		out[i].hash = hash
	}
	for _, rd := range out {
		if len(rd.hash) > s.cfg.maxFields {
			rd.fields, rd.hash = int64(len(rd.hash)), nil
		}
	}
	return out, nil
}

// scanHash reads a hash with HSCAN; it stops early once the hash is over max_fields_per_zone.
// A key that is gone or no longer a hash reads as empty.
func (s *syncer) scanHash(ctx context.Context, key string) (map[string]string, error) {
	hash := map[string]string{}
	var cursor uint64
	for {
		kv, next, err := s.client.HScan(ctx, key, cursor, "", scanCount).Result()
		if isWrongType(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read zone %s: %w", key, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			hash[kv[i]] = kv[i+1] // a field seen twice: the later read is the newer
		}
		if next == 0 || len(hash) > s.cfg.maxFields {
			return hash, nil
		}
		cursor = next
	}
}
