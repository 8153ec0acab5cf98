package gatewaydns

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// load applies pending work; it is the only writer of the zone set. Changes whose writers
// named the fields are read (HMGET) and applied at once. Whole reads run as a wholeJob in
// another goroutine, one at a time: full resyncs (at start, on reconnect, every resync
// period, after errors) and zones changed in unknown fields, paced by a reloadPacer. So a
// named change never waits for a whole read, however large the zone.
func (s *syncer) load(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.resync)
	defer ticker.Stop()
	paced := time.NewTimer(time.Hour)
	paced.Stop()
	defer paced.Stop()
	pacer := newReloadPacer(s.cfg.coalesce)
	results := make(chan *wholeResult, 1)
	var reading sync.WaitGroup
	defer reading.Wait()
	backoff := newBackoff()
	var retry <-chan time.Time
	wantFull := false
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-paced.C: // a zone's pause is over
		case <-ticker.C:
			wantFull = true
		case <-retry:
			retry = nil
			wantFull = true
		case res := <-results:
			// Named changes heard of so far are applied first: read after the whole read
			// began, they are kept as they are, and need no comparison of the whole zone.
			// If that fails the result is dropped: the retry is a full load.
			err = s.loadPending(ctx, pacer, &wantFull)
			touched := s.touched
			s.job, s.touched = nil, nil
			if err == nil {
				err = s.finishJob(ctx, pacer, res, touched)
			}
		}
		if err == nil {
			err = s.loadPending(ctx, pacer, &wantFull)
		}
		zonesServed.Set(float64(len(s.g.current().zones)))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The retry is a full load: it covers every zone waiting now.
			pacer.clear()
			log.Warningf("redis load: %v (full resync in %s)", err, backoff.next)
			retry = time.After(backoff.step())
			continue
		}
		backoff.reset()
		if s.job != nil {
			continue // the next job starts when this one is done
		}
		var job *wholeJob
		if wantFull {
			// A full read that begins now covers every zone marked so far.
			wantFull = false
			pacer.clear()
			job = &wholeJob{all: true}
		} else if zones, wait := pacer.due(time.Now()); len(zones) > 0 {
			job = &wholeJob{zones: zones}
		} else if wait > 0 {
			paced.Reset(wait)
		}
		if job != nil {
			s.startJob(ctx, job, results, &reading)
		}
	}
}

// loadPending takes the changes heard of: it applies those whose writers named the fields
// and hands the zones changed in unknown fields (or that cannot be updated by field) to the
// pacer; a full resync asked for sets wantFull.
func (s *syncer) loadPending(ctx context.Context, pacer *reloadPacer, wantFull *bool) error {
	s.mu.Lock()
	full, dirty := s.full, s.dirty
	s.full, s.dirty = false, map[string]*zoneMark{}
	s.mu.Unlock()
	*wantFull = *wantFull || full
	now := time.Now()
	whole, err := s.readFields(ctx, dirty)
	for _, zone := range whole {
		pacer.add(zone, now)
	}
	for zone, m := range dirty {
		if m.whole {
			pacer.add(zone, m.at)
		}
	}
	return err
}

// startJob runs job in its own goroutine; its result comes back on results.
func (s *syncer) startJob(ctx context.Context, job *wholeJob, results chan<- *wholeResult, reading *sync.WaitGroup) {
	job.served, job.start = s.g.current(), time.Now()
	s.job = job
	s.touched = map[string]fieldSet{}
	reading.Add(1)
	go func() {
		defer reading.Done()
		res := s.readWhole(ctx, job)
		select {
		case results <- res:
		case <-ctx.Done():
		}
	}()
}

// finishJob serves what a whole read found; touched holds the fields read by name since it
// began.
func (s *syncer) finishJob(ctx context.Context, pacer *reloadPacer, res *wholeResult, touched map[string]fieldSet) error {
	job := res.job
	kind := "zone"
	if job.all {
		kind = "full"
	}
	if res.err != nil {
		loadsTotal.WithLabelValues(kind, "error").Inc()
		return res.err
	}
	s.applyWhole(ctx, pacer, res, touched)
	end := time.Now()
	if !job.all {
		for _, zone := range job.zones {
			pacer.done(zone, job.start, end)
			loadsTotal.WithLabelValues(kind, "ok").Inc()
			s.zoneLoads.Add(1)
		}
		return nil
	}
	loadsTotal.WithLabelValues(kind, "ok").Inc()
	s.fullLoads.Add(1)
	lastFullSync.SetToCurrentTime()
	if !s.g.loaded.Swap(true) {
		log.Infof("loaded %d zones from redis", len(s.g.current().zones))
	}
	s.closeOnce.Do(func() { close(s.loadedOnce) })
	return nil
}

// applyWhole serves the zones of a whole read. touched holds the fields read by name since
// the read began: their served values are newer than the read's, so they are kept. A zone
// that the read found gone although fields of it were read by name meanwhile is read again
// rather than removed (it may have come back).
func (s *syncer) applyWhole(ctx context.Context, pacer *reloadPacer, res *wholeResult, touched map[string]fieldSet) {
	cur := s.g.current()
	keys := res.job.zones
	if res.job.all {
		// Every zone read, served, or refused before.
		all := maps.Clone(s.tooBig)
		for k := range res.reads {
			all[k] = true
		}
		for k := range cur.zones {
			all[k] = true
		}
		keys = slices.Collect(maps.Keys(all))
	}
	changed := map[string]*builtZone{} // new versions; nil: no longer served
	for _, k := range keys {
		rd, old := res.reads[k], cur.get(k)
		if rd != nil && rd.fields > 0 {
			s.refuse(k, rd.fields, old)
			s.tooBig[k] = true
			continue
		}
		if s.tooBig[k] {
			s.fits(k)
			delete(s.tooBig, k)
		}
		switch {
		case old == nil:
			if rd != nil && rd.built != nil {
				changed[k] = rd.built
			}
		case rd == nil || len(rd.hash) == 0:
			if len(touched[k]) > 0 {
				pacer.add(k, time.Now())
			} else {
				changed[k] = nil
			}
		default:
			if bz := s.merge(k, rd, old, touched[k]); bz != old {
				changed[k] = bz
			}
		}
	}
	s.countOversized()
	s.install(ctx, changed)
}

// merge returns the version of served zone key for what a whole read found, with the
// fields in touched kept as served: old itself when nothing else differs, which the
// content digest tells in O(len(touched)); else an update or a build.
func (s *syncer) merge(key string, rd *zoneRead, old *builtZone, touched fieldSet) *builtZone {
	d := rd.digest
	for f := range touched {
		if v, ok := rd.hash[f]; ok {
			d.sub(f, v)
		}
		if po := old.owners[f]; po != nil {
			d.add(f, po.value)
		}
	}
	if d == old.digest {
		return old
	}
	fields := rd.hash
	for f := range touched {
		if po := old.owners[f]; po != nil {
			fields[f] = po.value
		} else {
			delete(fields, f)
		}
	}
	if len(fields) == 0 {
		return nil
	}
	return s.build(key, fields, old)
}

// install serves new versions of zones (not yet serial-numbered; nil: stop serving the
// zone). New versions of served zones are swapped into their zoneRef; only adding or
// removing zones copies the zone set.
func (s *syncer) install(ctx context.Context, changed map[string]*builtZone) {
	if len(changed) == 0 {
		return
	}
	var fresh []*builtZone
	for _, bz := range changed {
		if bz != nil {
			fresh = append(fresh, bz)
		}
	}
	s.serials.assign(ctx, fresh)
	cur := s.g.current()
	var next *zoneSet
	for k, bz := range changed {
		r := cur.zones[k]
		switch {
		case r != nil && bz != nil:
			r.p.Store(bz)
			continue
		case r == nil && bz == nil:
			continue
		}
		if next == nil {
			next = &zoneSet{zones: maps.Clone(cur.zones)}
			if next.zones == nil {
				next.zones = map[string]*zoneRef{}
			}
		}
		if bz == nil {
			delete(next.zones, k)
			s.serials.forget(k)
		} else {
			next.zones[k] = newZoneRef(bz)
		}
	}
	if next != nil {
		s.g.install(next)
	}
}

// refuse handles a zone hash with more fields than max_fields_per_zone: it is not loaded;
// the version served before, if any, stays in service.
func (s *syncer) refuse(key string, fields int64, old *builtZone) {
	if !s.tooBig[key] {
		kept := "it is not served"
		if old != nil {
			kept = "the version loaded before keeps being served"
		}
		log.Warningf("zone %s: hash has %d fields, more than max_fields_per_zone %d: not loaded; %s",
			key, fields, s.cfg.maxFields, kept)
	}
}

func (s *syncer) countOversized() {
	oversizedZones.Set(float64(len(s.tooBig)))
	s.oversized.Store(int64(len(s.tooBig)))
}

// fits notes that a zone refused before is no longer over max_fields_per_zone (it shrank or
// is gone).
func (s *syncer) fits(key string) {
	log.Infof("zone %s: no longer over max_fields_per_zone %d", key, s.cfg.maxFields)
}
