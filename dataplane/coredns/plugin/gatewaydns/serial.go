package gatewaydns

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// SerialsKey is the redis hash in which the plugin keeps each zone's last SOA serial with
// the digest of the content it was given to: field = zone name, value = "SERIAL DIGEST".
// The key has no trailing dot, so it is never taken for a zone.
const SerialsKey = "tfgateway:dns:serials"

// serialScript assigns the serial of a zone version atomically in redis. Same content as
// stored (and not below the caller's floor): the stored serial, so every replica reading
// the same redis serves the same serial, and a restart keeps it. Other content: the larger
// (in RFC 1982 serial arithmetic) of the unix time, the caller's floor and stored + 1, so
// serials only increase across changes, restarts and replicas. A caller that has served no
// version of the zone yet (ARGV[5] = "1": after a start) takes at least stored + 2 and the
// unix time + 1 for other content: a process that stopped may have served stored + 1 or
// its unix time before recording it (see serialKeeper.provisional), and that serial is not
// given to other content. ARGV: zone, digest, floor ("" = none), unix seconds, fresh.
var serialScript = redis.NewScript(`
local M = 4294967296
local function after(a, b) local d = (a - b) % M; return d ~= 0 and d < 2147483648 end
local floor = tonumber(ARGV[3])
local now = tonumber(ARGV[4]) % M
local new = now
if floor and after(floor, new) then new = floor end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local s, d = string.match(cur, '^(%d+) (%x+)$')
  s = tonumber(s)
  if s and d == ARGV[2] and (not floor or not after(floor, s)) then return s end
  if s and not after(new, s) then new = (s + 1) % M end
  if s and ARGV[5] == '1' then
    if after((s + 2) % M, new) then new = (s + 2) % M end
    if after((now + 1) % M, new) then new = (now + 1) % M end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], new .. ' ' .. ARGV[2])
return new
`)

// serialAfter reports whether a comes after b in RFC 1982 serial number arithmetic.
func serialAfter(a, b uint32) bool { return a != b && int32(a-b) > 0 }

// servedSerial is the serial this process last served for a zone, with its content digest.
type servedSerial struct {
	serial uint32
	digest digest
}

// serialKeeper gives each new version of a zone its SOA serial (loader goroutine only).
// Serials derive from time (unix seconds) and only increase: a version gets at least the
// previous serial + 1, so a secondary that polls the SOA (RFC 1982 comparison) always sees
// a change. The last serial of every zone is kept in redis (SerialsKey) so that a restart
// continues from it and replicas agree; when redis refuses the write (read-only replica,
// ACL) the serial is kept in memory only, which still increases within the process.
type serialKeeper struct {
	client *redis.Client
	served map[string]servedSerial
	now    func() time.Time
	warn   func(key, format string, args ...any) bool
}

func newSerialKeeper(client *redis.Client, warn func(key, format string, args ...any) bool) *serialKeeper {
	return &serialKeeper{client: client, served: map[string]servedSerial{}, now: time.Now, warn: warn}
}

// assign sets the serials of new zone versions (not yet served), in one round trip.
func (k *serialKeeper) assign(ctx context.Context, zones []*builtZone) {
	if len(zones) == 0 {
		return
	}
	now := uint32(k.now().Unix())
	args := make([][]any, len(zones))
	for i, bz := range zones {
		floor, fresh := "", "1"
		if s, ok := k.served[bz.name]; ok {
			fresh = ""
			if s.digest != bz.digest {
				floor = fmt.Sprint(s.serial + 1)
			}
		}
		args[i] = []any{bz.name, bz.digest.String(), floor, now, fresh}
	}
	for i, serial := range k.eval(ctx, args) {
		if serial < 0 {
			serial = int64(k.local(zones[i], now))
		}
		k.set(zones[i], uint32(serial))
	}
}

// provisional gives a new version of a zone this process serves its serial without a round
// trip, for a change to be served before redis has heard of its serial: the version served
// now's serial when the content is the same, else the larger of the unix time and that
// serial + 1, which is what redis gives unless another replica went further. It reports
// false, setting nothing, for a zone this process serves no version of. The serial is then
// recorded by record, right after the version is served.
func (k *serialKeeper) provisional(bz *builtZone) bool {
	s, ok := k.served[bz.name]
	if !ok {
		return false
	}
	serial := s.serial
	if s.digest != bz.digest {
		serial++
		if now := uint32(k.now().Unix()); serialAfter(now, serial) {
			serial = now
		}
	}
	k.set(bz, serial)
	return true
}

// record keeps the provisional serial of bz, now served, in redis, and returns the serial
// redis agreed on: bz's own, or a later one when another replica or an earlier process went
// further (redis never gives less than the floor it is passed). The caller serves that.
func (k *serialKeeper) record(ctx context.Context, bz *builtZone) uint32 {
	own := bz.zone.SOA.Serial
	serial := k.eval(ctx, [][]any{{bz.name, bz.digest.String(), fmt.Sprint(own), uint32(k.now().Unix()), ""}})[0]
	if serial < 0 || uint32(serial) == own {
		return own
	}
	k.served[bz.name] = servedSerial{serial: uint32(serial), digest: bz.digest}
	return uint32(serial)
}

// eval runs serialScript once per args, pipelined: by hash (one per change of a busy zone);
// the script itself only where redis does not have it yet (first use, or after a restart or
// SCRIPT FLUSH). A serial redis cannot keep is -1 (logged once).
func (k *serialKeeper) eval(ctx context.Context, args [][]any) []int64 {
	cmds := make([]*redis.Cmd, len(args))
	pipe := k.client.Pipeline()
	for i := range args {
		cmds[i] = serialScript.EvalSha(ctx, pipe, []string{SerialsKey}, args[i]...)
	}
	_, _ = pipe.Exec(ctx) // errors per command, below
	pipe = k.client.Pipeline()
	for i := range args {
		if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			cmds[i] = serialScript.Eval(ctx, pipe, []string{SerialsKey}, args[i]...)
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}
	out := make([]int64, len(args))
	for i := range args {
		serial, err := cmds[i].Int64()
		if err != nil {
			k.warn("serial", "cannot keep SOA serials in redis key %s (%v): serials increase within this "+
				"process only, and may go back after a restart", SerialsKey, err)
			serial = -1
		}
		out[i] = serial
	}
	return out
}

// local is the serial when redis cannot keep it: the larger of now and last served + 1.
func (k *serialKeeper) local(bz *builtZone, now uint32) uint32 {
	s, ok := k.served[bz.name]
	switch {
	case !ok || serialAfter(now, s.serial):
		return now
	case s.digest == bz.digest:
		return s.serial
	default:
		return s.serial + 1
	}
}

func (k *serialKeeper) set(bz *builtZone, serial uint32) {
	bz.setSerial(serial)
	k.served[bz.name] = servedSerial{serial: serial, digest: bz.digest}
}

// forget drops a zone that is no longer served. Its serial stays in redis, so a zone that
// comes back continues above it.
func (k *serialKeeper) forget(zone string) { delete(k.served, zone) }
