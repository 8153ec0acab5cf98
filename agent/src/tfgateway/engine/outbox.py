"""Results, deletes and stats for the explorer, persisted in redis before they are sent.

The Go daemon sends each result PUT and DELETE once and forgets it (explorer spec F6), so an
explorer outage or a crash between provisioning and feedback loses it for good, and a lost
result later blocks the delete (F4). Here every message is first written to the hash
`tfgateway:outbox` and removed only once the explorer acknowledged it; a delivery task retries
with capped back-off, keeps the order of the messages of one workload (a result before its
delete) and reloads the hash on start. Stats are one coalesced entry: only the latest counters
matter, and they wait for `stats_gate` (the gateway must be registered, or the explorer 404s).
A message the explorer refuses for good (4xx) is logged and dropped: it can never succeed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tfgateway.explorer.client import Backoff, ExplorerClient, ExplorerError
from tfgateway.store.batch import AutoPipeline, LuaScript, as_batch

__all__ = ["OUTBOX_KEY", "SEQ_KEY", "STATS_FIELD", "Message", "Outbox"]

log = logging.getLogger(__name__)

OUTBOX_KEY: Final = "tfgateway:outbox"
SEQ_KEY: Final = "tfgateway:outbox:seq"
STATS_FIELD: Final = "stats"
CONCURRENCY: Final = 64
"""Messages in flight at once. A result's round trip (to the result sender's pipe, the
explorer, the verdict back) waits for a turn of the agent's loop, which a page of jobs holds
for tens of milliseconds during a catch-up: with 16 in flight, results went out at half the
pace workloads were applied and a backlog of 27,000 was left for after the last one
(benchmarks/agent, the timeline of 50,000)."""
FORGET_BATCH: Final = 64
ACK_MEMORY_MAX: Final = 100_000
"""Delivered entries are removed from the hash in batches of at most this many."""

Op = Literal["result", "delete"]

# One round trip per queued message instead of two (INCR, then HSET): the engine queues a
# message for every job, and on a loaded machine every round trip to redis costs a context
# switch or two. ARGV[2], when not empty, is the latest stats entry, written in the same call.
# With a third key, ARGV[4] and ARGV[5] are a field and value of it written first, in the same
# atomic call (the engine's cache entry of the workload the result answers).
_ENQUEUE: Final = LuaScript(
    """
local seq = redis.call('INCR', KEYS[1])
if KEYS[3] then redis.call('HSET', KEYS[3], ARGV[4], ARGV[5]) end
redis.call('HSET', KEYS[2], string.format('%020d', seq), ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[3], ARGV[2]) end
return seq
"""
)


@dataclass(frozen=True, slots=True)
class Message:
    """One pending message; `seq` orders messages (per workload) across restarts."""

    seq: int
    op: Op
    gwid: str
    body: bytes = b""
    queued: float = 0.0

    @property
    def field(self) -> str:
        return f"{self.seq:020d}"

    def to_json(self) -> bytes:
        """`json.dumps({"op", "id", "body", "queued"}, separators=(",", ":"))`, the same
        bytes (a test holds them equal) with `json`'s own C string encoder and float text,
        without the encoder object and its generator per message."""
        queued = self.queued
        number = float.__repr__(queued) if math.isfinite(queued) else json.dumps(queued)
        return "".join(
            (
                '{"op":',
                _json_string(self.op),
                ',"id":',
                _json_string(self.gwid),
                ',"body":',
                _json_string(self.body.decode("utf-8", "replace")),
                ',"queued":',
                number,
                "}",
            )
        ).encode()

    @classmethod
    def from_json(cls, seq: int, raw: bytes) -> Message:
        doc = json.loads(raw)
        if doc.get("op") not in ("result", "delete") or not isinstance(doc.get("id"), str):
            raise ValueError(f"unknown outbox entry {raw[:80]!r}")
        return cls(
            seq=seq,
            op=doc["op"],
            gwid=doc["id"],
            body=str(doc.get("body", "")).encode(),
            queued=float(doc.get("queued", 0.0)),
        )


_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""What `json.dumps` (ensure_ascii) writes for a string."""


def _stats_json(stats: dict[str, int]) -> str:
    """`json.dumps(stats)` (one per queued result), without the encoder object for plain ints."""
    if not all(type(v) is int for v in stats.values()):
        return json.dumps(stats)
    items = ", ".join([f"{_json_string(k)}: {int.__repr__(v)}" for k, v in stats.items()])
    return "{" + items + "}"


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Outbox:
    """Durable queue of explorer feedback plus the task that delivers it."""

    def __init__(
        self,
        redis: aioredis.Redis | AutoPipeline,
        explorer: ExplorerClient,
        *,
        backoff: Callable[[], Backoff] = Backoff,
        on_delivered: Callable[[Message], Awaitable[None] | None] | None = None,
        stats_gate: asyncio.Event | None = None,
        concurrency: int = CONCURRENCY,
        stats_interval: float = 1.0,
    ) -> None:
        self.concurrency = concurrency
        self.stats_interval = stats_interval
        """Stats are coalesced: at most one report per interval, always the latest counters."""
        self._last_stats = float("-inf")
        self._batch = as_batch(redis)  # the enqueues of concurrent jobs travel together
        self._redis = self._batch.client
        self._explorer = explorer
        self._backoff = backoff()
        self._pending: dict[int, Message] = {}
        self._index: dict[tuple[str, str], int] = {}  # (gwid, op) -> pending count
        self._stats: dict[str, int] | None = None
        self._stats_version = 0
        self._forget: set[str] = set()
        self._forgetting = False
        self._wake = asyncio.Event()
        self._on_delivered = on_delivered
        self._stats_gate = stats_gate
        self.delivered = 0
        self.dropped = 0
        # When each result/delete was last acknowledged (loop time), so the engine can tell a
        # poll answer written before our PUT arrived from a PUT the explorer really lost.
        self._acked_at: dict[tuple[str, str], float] = {}

    # -- queueing (called by the engine; raises RedisError if redis is down) ------------------

    async def load(self) -> int:
        """Read what a previous run left behind; returns the number of pending messages."""
        raw = await self._redis.hgetall(OUTBOX_KEY)
        for key_, value_ in raw.items():
            key, value = _b(key_), _b(value_)
            name = key.decode("utf-8", "replace")
            if name == STATS_FIELD:
                try:
                    self._stats = {str(k): int(v) for k, v in json.loads(value).items()}
                except (ValueError, AttributeError, TypeError):
                    log.error("outbox: dropping undecodable stats entry %r", value[:80])
                continue
            try:
                message = Message.from_json(int(name), value)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("outbox: dropping undecodable entry %s: %s", name, exc)
                await self._redis.hdel(OUTBOX_KEY, key)
                continue
            self._add(message)
        if self._pending:
            # Never reuse a sequence number still in the hash (the counter may have been lost).
            await self._redis.eval(
                "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
                "redis.call('SET', KEYS[1], ARGV[1]) end return 0",
                1,
                SEQ_KEY,
                str(max(self._pending)),
            )
        self.wake()
        return len(self._pending) + (1 if self._stats is not None else 0)

    async def _enqueue(
        self,
        op: Op,
        gwid: str,
        body: bytes = b"",
        stats: Mapping[str, int] | None = None,
        entry: tuple[str, str, bytes] | None = None,
    ) -> None:
        queued = time.time()
        value = Message(seq=0, op=op, gwid=gwid, body=body, queued=queued).to_json()
        stats_value = dict(stats) if stats is not None else None
        keys = [SEQ_KEY, OUTBOX_KEY]
        args: list[str | bytes] = [
            value,
            _stats_json(stats_value) if stats_value is not None else "",
            STATS_FIELD,
        ]
        if entry is not None:
            keys.append(entry[0])
            args += entry[1:]
        seq = int(await self._batch.eval(_ENQUEUE, keys, args))
        self._add(Message(seq=seq, op=op, gwid=gwid, body=body, queued=queued))
        if stats_value is not None:
            self._set_stats(stats_value)
        self._wake.set()

    async def put_result(
        self,
        gwid: str,
        body: bytes,
        *,
        stats: Mapping[str, int] | None = None,
        entry: tuple[str, str, bytes] | None = None,
    ) -> None:
        """Queue a result PUT (body = Go-encoded `workloads.Result` with its newline); with
        `stats`, the latest counters are queued in the same redis call (as `stats()` does).
        `entry` (hash key, field, value) is written in that call too, before the message and
        atomically with it: the engine's cache entry, so a result never goes out for a
        workload whose cache write failed, in one redis command instead of two."""
        await self._enqueue("result", gwid, body, stats, entry)

    async def delete(self, gwid: str, *, stats: Mapping[str, int] | None = None) -> None:
        await self._enqueue("delete", gwid, stats=stats)

    async def stats(self, counters: Mapping[str, int]) -> None:
        """Queue the latest workload counters, replacing any not yet sent."""
        value = dict(counters)
        await self._redis.hset(OUTBOX_KEY, STATS_FIELD, json.dumps(value))
        self._set_stats(value)
        self._wake.set()

    def _set_stats(self, value: dict[str, int]) -> None:
        self._stats = value
        self._stats_version += 1

    def wake(self) -> None:
        """Deliver now (e.g. once registration opened the stats gate)."""
        self._wake.set()

    def acknowledged_since(self, gwid: str, op: Op, since: float) -> bool:
        """True when the explorer acknowledged `op` for `gwid` at or after loop time `since`."""
        acked = self._acked_at.get((gwid, op))
        return acked is not None and acked >= since

    def _remember_ack(self, message: Message) -> None:
        now = asyncio.get_running_loop().time()
        self._acked_at[(message.gwid, message.op)] = now
        if len(self._acked_at) > ACK_MEMORY_MAX:  # bounded: the oldest half goes
            oldest = sorted(self._acked_at.items(), key=lambda kv: kv[1])
            for key, _ in oldest[: len(oldest) // 2]:
                del self._acked_at[key]

    def has_pending(self, gwid: str, op: Op | None = None) -> bool:
        if op is None:
            return bool(self._index.get((gwid, "result")) or self._index.get((gwid, "delete")))
        return bool(self._index.get((gwid, op)))

    def _add(self, message: Message) -> None:
        if message.seq in self._pending:
            return  # loaded twice (start-up retried)
        self._pending[message.seq] = message
        key = (message.gwid, message.op)
        self._index[key] = self._index.get(key, 0) + 1

    def _forget_message(self, message: Message) -> None:
        if self._pending.pop(message.seq, None) is None:
            return
        key = (message.gwid, message.op)
        left = self._index.get(key, 1) - 1
        if left:
            self._index[key] = left
        else:
            self._index.pop(key, None)

    @property
    def depth(self) -> int:
        return len(self._pending) + (1 if self._stats is not None else 0)

    def pending(self) -> list[Message]:
        return sorted(self._pending.values(), key=lambda m: m.seq)

    async def persist_all(self) -> None:
        """Write every pending message back (after redis lost its data)."""
        for message in list(self._pending.values()):
            await self._redis.hset(OUTBOX_KEY, message.field, message.to_json())
        if self._stats is not None:
            await self._redis.hset(OUTBOX_KEY, STATS_FIELD, json.dumps(self._stats))
        if self._pending:
            await self._redis.set(SEQ_KEY, str(max(self._pending)), nx=True)

    # -- delivery ------------------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        if message.op == "result":
            await self._explorer.put_result(message.gwid, message.body)
        else:
            await self._explorer.delete_workload(message.gwid)

    async def _done(self, field: str) -> None:
        self._forget.add(field)
        await self._flush_forget()

    async def _flush_forget(self) -> None:
        """HDEL delivered entries; if redis is down they are retried on the next pass (a
        message delivered twice after a crash is harmless, one never delivered is not)."""
        if not self._forget:
            return
        batch = set(self._forget)
        self._forgetting = True
        try:
            with contextlib.suppress(RedisError, OSError):
                await self._batch.hdel(OUTBOX_KEY, *batch)
                self._forget -= batch
        finally:
            self._forgetting = False

    async def deliver_once(self) -> bool:
        """One pass over everything pending; False if something must be retried later.

        Workloads are served concurrently (a slow explorer must not make a backlog of
        hundreds take hundreds of round trips in a row); the messages of one workload go
        strictly in order, and a failed one holds back the rest of its workload.
        """
        groups: dict[str, list[Message]] = {}
        for message in self.pending():
            groups.setdefault(message.gwid, []).append(message)
        state = {"ok": True, "unreachable": False, "logged": 0}
        # `concurrency` workers take workloads from one queue: a backlog of 50,000 results is
        # not 50,000 tasks waiting on a semaphore (≈ 1 KB each, created at once).
        queue = collections.deque(groups.values())

        async def worker() -> None:
            while queue:
                for message in queue.popleft():
                    if state["unreachable"]:
                        state["ok"] = False
                        return
                    if not await self._deliver_one(message, state):
                        break

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(queue)))))
        ok = bool(state["ok"])
        if self._stats is not None and ok and self._stats_due() == 0:
            ok = await self._deliver_stats()
        await self._flush_forget()
        return ok

    def _stats_due(self) -> float | None:
        """Seconds until the pending stats may be sent (0: now); None: nothing to send yet."""
        if self._stats is None or not (self._stats_gate is None or self._stats_gate.is_set()):
            return None
        wait = self._last_stats + self.stats_interval - asyncio.get_running_loop().time()
        return max(0.0, wait)

    async def _deliver_one(self, message: Message, state: dict[str, Any]) -> bool:
        """Send one message; True when it is settled (acknowledged or refused for good)."""
        try:
            await self._send(message)
        except ExplorerError as exc:
            if exc.retryable:
                state["ok"] = False
                if exc.status is None:  # explorer unreachable: the rest would fail too
                    state["unreachable"] = True
                if state["logged"] < 3:
                    state["logged"] += 1
                    log.warning(
                        "outbox: %s %s not delivered (%d pending), will retry: %s",
                        message.op,
                        message.gwid,
                        len(self._pending),
                        exc,
                    )
                return False
            self.dropped += 1
            log.error(
                "outbox: explorer refused %s for %s for good, dropping it: %s",
                message.op,
                message.gwid,
                exc,
            )
        else:
            self.delivered += 1
            self._remember_ack(message)
            log.debug("outbox: delivered %s for %s", message.op, message.gwid)
        self._forget_message(message)
        # HDEL in batches (one round trip per pass, or per FORGET_BATCH messages of a large
        # backlog) rather than one per message; deliver_once flushes the rest at its end.
        # One HDEL in flight at a time: the other workers add to the next one meanwhile (each
        # sending the whole growing set again cost more than the deliveries at 64 workers).
        self._forget.add(message.field)
        if len(self._forget) >= FORGET_BATCH and not self._forgetting:
            await self._flush_forget()
        if self._on_delivered is not None:
            maybe = self._on_delivered(message)
            if maybe is not None:
                await maybe
        return True

    async def _deliver_stats(self) -> bool:
        self._last_stats = asyncio.get_running_loop().time()
        version, counters = self._stats_version, dict(self._stats or {})
        try:
            await self._explorer.update_reserved_resources(counters)
        except ExplorerError as exc:
            if exc.retryable:
                log.warning("outbox: stats not delivered, will retry: %s", exc)
                return False
            log.error("outbox: explorer refused stats for good, dropping them: %s", exc)
        if version == self._stats_version:
            self._stats = None
            await self._done(STATS_FIELD)
        return True

    async def run(self) -> None:
        """Deliver until cancelled: immediately when woken, with back-off after failures."""
        while True:
            self._wake.clear()
            try:
                ok = await self.deliver_once()
            except (RedisError, OSError) as exc:
                log.warning("outbox: redis error during delivery: %s", exc)
                ok = False
            except Exception:
                log.exception("outbox: delivery failed unexpectedly; retrying")
                ok = False
            if ok and not self._pending:
                self._backoff.reset()
                due = self._stats_due()
                if due is None:
                    await self._wake.wait()
                elif due > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=due)
                continue
            if ok:
                self._backoff.reset()
                continue
            await asyncio.sleep(self._backoff.next_delay())

    def snapshot(self) -> dict[str, Any]:
        return {"pending": len(self._pending), "stats_pending": self._stats is not None}
