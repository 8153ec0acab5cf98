package gatewaydns

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// readFields applies the changes whose writers named the fields: one round trip reads those
// fields of every such zone (HMGET), and each zone gets a new version holding just them. It
// returns the zones that must be read whole instead: not served yet, refused for their
// size, no longer a hash, emptied, or changed too much for an incremental update.
func (s *syncer) readFields(ctx context.Context, dirty map[string]*zoneMark) ([]string, error) {
	type read struct {
		zone   string
		fields []string
		named  time.Time // when the change was heard of
		cmd    *redis.SliceCmd
	}
	var reads []read
	var whole []string
	pipe := s.client.Pipeline()
	for zone, m := range dirty {
		if len(m.fields) == 0 {
			continue
		}
		if s.tooBig[zone] || s.g.current().get(zone) == nil {
			whole = append(whole, zone)
			continue
		}
		fields := slices.Sorted(maps.Keys(m.fields))
		reads = append(reads, read{zone, fields, m.named, pipe.HMGet(ctx, zone, fields...)})
	}
	if len(reads) == 0 {
		return whole, nil
	}
	start := time.Now()
	_, _ = pipe.Exec(ctx) // errors per command, below
	readDone := time.Now()
	changeSeconds.WithLabelValues("read").Observe(readDone.Sub(start).Seconds())
	for _, rd := range reads {
		changeSeconds.WithLabelValues("wait").Observe(start.Sub(rd.named).Seconds())
		values, err := rd.cmd.Result()
		if err != nil && !isWrongType(err) {
			return whole, fmt.Errorf("read zone %s: %w", rd.zone, err)
		}
		if s.touched != nil {
			// Read after the whole read in flight began: newer than what it reads.
			t := s.touched[rd.zone]
			if t == nil {
				t = fieldSet{}
				s.touched[rd.zone] = t
			}
			for _, f := range rd.fields {
				t[f] = struct{}{}
			}
		}
		if err != nil || !s.applyFields(ctx, rd.zone, rd.fields, values, rd.named) {
			whole = append(whole, rd.zone)
		}
	}
	return whole, nil
}

// applyFields serves the version of zone with fields set to values (nil: the field is
// gone). It reports false when the zone must be read whole instead. named is when the change
// was heard of (for the change_seconds metric).
func (s *syncer) applyFields(ctx context.Context, zone string, fields []string, values []any, named time.Time) bool {
	s.fieldLoads.Add(1)
	old := s.g.current().get(zone)
	changes := map[string]*string{}
	for i, f := range fields {
		v, _ := values[i].(string)
		cur := old.owner(f)
		switch {
		case values[i] == nil && cur != nil:
			changes[f] = nil
		case values[i] != nil && (cur == nil || cur.value != v):
			changes[f] = &v
		}
	}
	if len(changes) == 0 {
		return true
	}
	added := 0
	for f, v := range changes {
		if v != nil && old.owner(f) == nil {
			added++
		} else if v == nil {
			added--
		}
	}
	if n := len(old.owners) + added; n == 0 || n > s.cfg.maxFields {
		return false
	}
	start := time.Now()
	bz := applyChanges(old, changes, s.cfg.zoneDefaults(), s.cfg.limits(), s.logData)
	if bz == nil {
		return false
	}
	built := time.Now()
	s.install(ctx, map[string]*builtZone{zone: bz})
	changeSeconds.WithLabelValues("total").Observe(time.Since(named).Seconds())
	changeSeconds.WithLabelValues("build").Observe(built.Sub(start).Seconds())
	changeSeconds.WithLabelValues("serial").Observe(time.Since(built).Seconds())
	return true
}
