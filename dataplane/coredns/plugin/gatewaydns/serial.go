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
// serials only increase across changes, restarts and replicas. ARGV: zone, digest, floor
// ("" = none), unix seconds.
var serialScript = redis.NewScript(`
local M = 4294967296
local function after(a, b) local d = (a - b) % M; return d ~= 0 and d < 2147483648 end
local floor = tonumber(ARGV[3])
local new = tonumber(ARGV[4]) % M
if floor and after(floor, new) then new = floor end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local s, d = string.match(cur, '^(%d+) (%x+)$')
  s = tonumber(s)
  if s and d == ARGV[2] and (not floor or not after(floor, s)) then return s end
  if s and not after(new, s) then new = (s + 1) % M end
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
		floor := ""
		if s, ok := k.served[bz.name]; ok && s.digest != bz.digest {
			floor = fmt.Sprint(s.serial + 1)
		}
		args[i] = []any{bz.name, bz.digest.String(), floor, now}
	}
	// By hash (one per change of a busy zone); the script itself only where redis does not
	// have it yet (first use, or after a restart or SCRIPT FLUSH).
	cmds := make([]*redis.Cmd, len(zones))
	pipe := k.client.Pipeline()
	for i := range zones {
		cmds[i] = serialScript.EvalSha(ctx, pipe, []string{SerialsKey}, args[i]...)
	}
	_, _ = pipe.Exec(ctx) // errors per command, below
	pipe = k.client.Pipeline()
	for i := range zones {
		if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			cmds[i] = serialScript.Eval(ctx, pipe, []string{SerialsKey}, args[i]...)
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}
	for i, bz := range zones {
		serial, err := cmds[i].Int64()
		if err != nil {
			k.warn("serial", "cannot keep SOA serials in redis key %s (%v): serials increase within this "+
				"process only, and may go back after a restart", SerialsKey, err)
			serial = int64(k.local(bz, now))
		}
		k.set(bz, uint32(serial))
	}
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
