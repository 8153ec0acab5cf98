"""Optimistic transactions: read, decide in Python, commit with one atomic check-and-set.

A transaction body reads what it needs (ownership of a name, the record set it extends),
decides (refuse, or queue writes) and returns. The writes are then sent as one Lua script
that first compares every value the body read with its current value in redis and applies
the writes only if none changed; otherwise the body runs again on fresh reads.

Why not WATCH/MULTI: a WATCH transaction needs a connection of its own for its whole
duration and several round trips, so concurrent jobs could not share pipelines, and WATCH
works per key: every subdomain of a managed domain WATCHes the same zone hash, so any two
concurrent subdomain jobs conflicted. Here the reads and the script of any number of jobs
travel in the same pipelines (`redisbatch.AutoPipeline`) and conflicts are per hash field:
two users racing for one name still get exactly one winner, two different names never
retry.

The body sees a small client (`Transaction`) with the reads and writes the primitives use;
`watch` and `multi` are accepted and do nothing (every read is checked anyway), so the same
body reads like a WATCH transaction. Keys travel in ARGV: the gateway's redis is a single
instance, not a cluster.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from tfgateway.store.batch import Arg, AutoPipeline, LuaScript

__all__ = [
    "CAS_SCRIPT",
    "READ_SCRIPT",
    "Read",
    "Transaction",
    "TransactionConflictError",
    "run_transaction",
]

T = TypeVar("T")

Read = tuple[str, ...]
"""A read to prefetch: ("get", key), ("hget", key, field), ("hmget", key, f1, f2, ...)."""

MAX_ATTEMPTS: Final = 50

CAS_SCRIPT: Final = LuaScript(
    """
local a, i = ARGV, 2
local function changed()
  local kind, key = a[i], a[i + 1]
  if kind == 'h' then
    local cur = redis.call('HGET', key, a[i + 2])
    local want = a[i + 3] == '1' and a[i + 4]
    i = i + 5
    return cur ~= want
  elseif kind == 'k' then
    local cur = redis.call('GET', key)
    local want = a[i + 2] == '1' and a[i + 3]
    i = i + 4
    return cur ~= want
  elseif kind == 'a' then
    local n = tonumber(a[i + 2])
    local first = i + 3
    i = first + 2 * n
    if redis.call('HLEN', key) ~= n then return true end
    for j = first, first + 2 * n - 1, 2 do
      if redis.call('HGET', key, a[j]) ~= a[j + 1] then return true end
    end
    return false
  end
  error('tfgateway cas: unknown check ' .. tostring(kind))
end
for _ = 1, tonumber(a[1]) do
  if changed() then return 0 end
end
local allowed = {HSET = true, HDEL = true, SET = true, DEL = true, PUBLISH = true}
while i <= #a do
  local op, n = a[i], tonumber(a[i + 1])
  if not allowed[op] then error('tfgateway cas: command not allowed: ' .. tostring(op)) end
  redis.call(op, unpack(a, i + 2, i + 1 + n))
  i = i + 2 + n
end
return 1
"""
)
"""ARGV: the number of checks, the checks, then the writes.
Checks: `h key field present value` (a hash field), `k key present value` (a string key),
`a key n f1 v1 … fn vn` (a whole hash: exactly these n fields). `present` is 1 or 0 (absent).
Writes: `OP n arg1 … argn` with OP one of HSET HDEL SET DEL PUBLISH."""


READ_SCRIPT: Final = LuaScript(
    """
local a, i, out = ARGV, 1, {}
while i <= #a do
  if a[i] == 'k' then
    out[#out + 1] = redis.call('GET', a[i + 1])
    i = i + 2
  else
    local n = tonumber(a[i + 2])
    out[#out + 1] = redis.call('HMGET', a[i + 1], unpack(a, i + 3, i + 2 + n))
    i = i + 3 + n
  end
end
return out
"""
)
"""A transaction's prefetch in one call. ARGV: reads, each `k key` (GET) or `h key n f1 … fn`
(HMGET); the reply has one entry per read, in order (nil for an absent key, a list for HMGET).
Only reads: atomic does not matter here, the commit checks every value read."""


class TransactionConflictError(Exception):
    """The data kept changing under the transaction for `MAX_ATTEMPTS` attempts."""


def _b(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value


class Transaction:
    """The client a transaction body uses: reads are recorded, writes are queued."""

    def __init__(self, batch: AutoPipeline) -> None:
        self._batch = batch
        self._fields: dict[tuple[str, str], bytes | None] = {}
        self._keys: dict[str, bytes | None] = {}
        self._hashes: dict[str, dict[bytes, bytes]] = {}
        self.writes: list[tuple[Arg, ...]] = []

    # -- reads (every value read is checked again at commit) ----------------------------------

    async def prefetch(self, reads: Sequence[Read]) -> None:
        """Fetch reads the body will make, all in one command (`READ_SCRIPT`): one reply to
        parse and one future per transaction instead of one per read. A redis error in any
        read (a key of the wrong type) fails the whole prefetch, as it failed the body."""
        args: list[Arg] = []
        for read in reads:
            kind, key, fields = read[0], read[1], read[2:]
            if kind == "get":
                args += ("k", key)
            elif kind in ("hget", "hmget") and fields:
                args += ("h", key, len(fields), *fields)
            else:
                raise ValueError(f"cannot prefetch {read!r}")
        if not args:
            return
        outcomes = await self._batch.eval(READ_SCRIPT, (), args)
        keys, hash_fields = self._keys, self._fields
        for read, outcome in zip(reads, outcomes, strict=True):
            key = read[1]
            if read[0] == "get":
                if key not in keys:
                    keys[key] = _b(outcome)
            else:
                for field, value in zip(read[2:], outcome, strict=True):
                    if (key, field) not in hash_fields:
                        hash_fields[(key, field)] = _b(value)

    async def get(self, key: str) -> bytes | None:
        if key not in self._keys:
            self._keys[key] = _b(await self._batch.get(key))
        return self._keys[key]

    async def hget(self, key: str, field: str) -> bytes | None:
        if key in self._hashes:
            return self._hashes[key].get(field.encode())
        if (key, field) not in self._fields:
            self._fields[(key, field)] = _b(await self._batch.hget(key, field))
        return self._fields[(key, field)]

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        if key in self._hashes:
            return [self._hashes[key].get(f.encode()) for f in fields]
        missing = [f for f in dict.fromkeys(fields) if (key, f) not in self._fields]
        if missing:
            values = await self._batch.hmget(key, missing)
            for f, v in zip(missing, values, strict=True):
                self._fields.setdefault((key, f), _b(v))
        return [self._fields[(key, f)] for f in fields]

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        """The whole hash; the commit then requires it unchanged (use for small hashes or
        rare operations: every field travels to the check)."""
        if key not in self._hashes:
            raw = await self._batch.hgetall(key)
            self._hashes[key] = {_b(k): _b(v) for k, v in raw.items()}
        return dict(self._hashes[key])

    async def hkeys(self, key: str) -> list[bytes]:
        return list((await self.hgetall(key)).keys())

    async def watch(self, *keys: str) -> None:
        """Nothing to do: what the body reads is what the commit checks."""

    def multi(self) -> None:
        """Nothing to do: writes are queued from the start."""

    # -- writes (applied by the commit, in order, only if no read changed) ---------------------

    def hset(self, key: str, field: str, value: bytes | str) -> None:
        self.writes.append(("HSET", key, field, value))

    def hdel(self, key: str, *fields: str) -> None:
        if fields:
            self.writes.append(("HDEL", key, *fields))

    def set(self, key: str, value: bytes | str) -> None:
        self.writes.append(("SET", key, value))

    def delete(self, *keys: str) -> None:
        if keys:
            self.writes.append(("DEL", *keys))

    def publish(self, channel: str, message: bytes | str) -> None:
        self.writes.append(("PUBLISH", channel, message))

    # -- commit --------------------------------------------------------------------------------

    def script_args(self) -> list[Arg]:
        """ARGV of `CAS_SCRIPT` for what was read and what is queued."""
        checks: list[Arg] = []
        count = 0
        # A field read before its whole hash is checked on its own as well: the decision may
        # rest on that earlier value, which the whole-hash read may no longer show.
        for (key, field), value in self._fields.items():
            checks += ["h", key, field, "0", ""] if value is None else ["h", key, field, "1", value]
            count += 1
        for key, value in self._keys.items():
            checks += ["k", key, "0", ""] if value is None else ["k", key, "1", value]
            count += 1
        for key, pairs in self._hashes.items():
            checks += ["a", key, len(pairs)]
            for k, v in pairs.items():
                checks += [k, v]
            count += 1
        args: list[Arg] = [count, *checks]
        for op, *rest in self.writes:
            args += [op, len(rest), *rest]
        return args

    async def commit(self) -> bool:
        """Apply the queued writes if nothing read has changed; False on a conflict."""
        if not self.writes:
            return True
        return int(await self._batch.eval(CAS_SCRIPT, [], self.script_args())) == 1


async def run_transaction(
    batch: AutoPipeline,
    body: Callable[[Transaction], Awaitable[T]],
    *,
    prefetch: Sequence[Read] = (),
    attempts: int = MAX_ATTEMPTS,
) -> T:
    """Run `body` and commit its writes, again on fresh reads after a conflict. Exceptions of
    the body (a refusal) and redis errors propagate; nothing is written then."""
    for _ in range(attempts):
        txn = Transaction(batch)
        if prefetch:
            await txn.prefetch(prefetch)
        result = await body(txn)
        if await txn.commit():
            return result
    raise TransactionConflictError(f"data kept changing for {attempts} attempts")
