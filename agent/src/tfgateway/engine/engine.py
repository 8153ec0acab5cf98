"""The provisioning engine: poll the explorer, apply each workload once, answer every one.

Semantics of the Go daemon (explorer spec §5-6) with its defects fixed:
- results and deletes go through the durable outbox (never lost; F4, F6);
- decommission looks at our own cached result, not the explorer's copy (F4);
- a malformed or unknown workload gets an error result and the rest of the batch goes on;
- an undecodable poll answer keeps the cursor where it was (F8);
- a failure of redis or of the explorer (transient) is never reported to the user as a failed
  workload: the batch stops and is retried from the same cursor;
- level-triggered reconcile: every live reservation is applied again (idempotently) at start,
  periodically and when redis lost its data, so DNS and proxy entries come back without new
  events and without sending new results;
- the jobs of a poll page run concurrently, so their redis commands share pipelines
  (redisbatch) and their results are sent together, in two waves: delegations first (the
  zones other names live in), then everything else. Jobs on the same workload or the same
  name run one after another in the Go daemon's type order (a subdomain before a proxy on
  its name) and then the explorer's, and so do all delegations and all 4to6 jobs;
- the cache entries of a wave's jobs are read in one command before the jobs run (each job
  takes its own; a second job of the same workload in the wave reads redis again).

The engine knows reservations, not redis key names: the cache, the outbox and the provisioners
are handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from redis.exceptions import RedisError

from tfgateway.engine.counters import Counters
from tfgateway.engine.outbox import Outbox
from tfgateway.explorer.client import (
    Backoff,
    ExplorerClient,
    ExplorerError,
    PollDecodeError,
    PollResult,
)
from tfgateway.explorer.models import (
    NEXT_ACTION_DELETE,
    WORKLOAD_TYPES,
    WorkloadError,
    item_real_id,
)
from tfgateway.explorer.workloads import TYPE_RANK, Job, job_from_item, rank, wire_result
from tfgateway.model import fastjson
from tfgateway.model.reservation import (
    CacheDecodeError,
    GoTime,
    Reservation,
    Result,
    ResultState,
    sign_result,
)
from tfgateway.node.identity import Identity
from tfgateway.primitives.provisioner import Provisioner, ProvisionError, reapplying
from tfgateway.telemetry.logs import Fields
from tfgateway.telemetry.metrics import Metrics

__all__ = ["Engine", "Provisioner", "ReservationStore", "TransientError"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TRANSIENT_ATTEMPTS: Final = 5
POLL_PAGE_SIZE: Final = 200
"""The explorer answers at most this many workloads per poll."""
JOB_TIMEOUT: Final = 60.0
MAX_CONCURRENT_JOBS: Final = 256
"""Chains of jobs (or re-applications) in flight at once."""
SERIAL_TYPES: Final = frozenset({"domain_delegate", "gateway4to6"})
"""Types whose jobs run one at a time: delegations nest inside each other across names, and
4to6 jobs share one WireGuard interface."""


class ReservationStore(Protocol):
    """What the engine needs of `cache.ReservationCache`."""

    async def get(self, reservation_id: str) -> Reservation | None: ...

    async def put(self, reservation: Reservation) -> None: ...

    def entry(self, reservation: Reservation) -> tuple[str, str, bytes]: ...

    async def get_many(self, reservation_ids: Sequence[str]) -> list[bytes | None]: ...

    def decode(self, reservation_id: str, value: bytes) -> Reservation: ...

    async def remove(self, reservation_id: str) -> None: ...

    async def list(self) -> tuple[list[Reservation], list[str]]: ...


class TransientError(Exception):
    """Infrastructure trouble (redis, explorer, timeouts): retry later, never blame the user."""


_TRANSIENT: Final = (RedisError, OSError, TimeoutError, TransientError)


def _is_transient(exc: BaseException) -> bool:
    """Infrastructure failures, including a ProvisionError caused by one (a primitive may wrap
    a redis error in its message; the user must not get an error result for that)."""
    if isinstance(exc, ExplorerError):
        return exc.retryable
    if isinstance(exc, ProvisionError):
        cause = exc.__cause__
        return cause is not None and cause is not exc and _is_transient(cause)
    return isinstance(exc, _TRANSIENT)


@contextlib.contextmanager
def _quiet(provisioner: object) -> Iterator[None]:
    """Re-applying unchanged state is routine: keep the primitive's info lines out of the log
    (thousands per pass otherwise); warnings and errors still show."""
    logger = logging.getLogger(type(provisioner).__module__)
    level = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _domain_of(r: Reservation) -> str | None:
    try:
        doc = fastjson.loads(r.data)
    except ValueError:
        return None
    domain = doc.get("domain") if isinstance(doc, dict) else None
    return domain.strip().rstrip(".").lower() if isinstance(domain, str) and domain else None


def _redis_trouble(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, RedisError | OSError):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


def _wave(type_rank: int) -> int:
    """Delegations (rank 0, with unknown types) make the zones the other names live in, so
    they run before every other job of a page; the other ranks only order jobs on the same
    name, which their chains already do (jobs are sorted by rank before chaining)."""
    return 0 if type_rank == 0 else 1


def _chain_keys(r: Reservation) -> list[Hashable]:
    """What orders two jobs: the same workload, the same name, or a serial type."""
    if r.type in SERIAL_TYPES:
        return [("type", r.type)]
    domain = _domain_of(r)
    return [("id", r.id)] if domain is None else [("id", r.id), ("name", domain)]


def chains(reservations: Sequence[Reservation]) -> list[list[int]]:
    """Partition indexes of `reservations` into chains: two that share a chain key are in the
    same chain (transitively), each chain in the given order. Chains may run concurrently."""
    parent = list(range(len(reservations)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[Hashable, int] = {}
    for i, r in enumerate(reservations):
        for key in _chain_keys(r):
            j = first.setdefault(key, i)
            parent[root(i)] = root(j)
    grouped: dict[int, list[int]] = {}
    for i in range(len(reservations)):
        grouped.setdefault(root(i), []).append(i)
    return list(grouped.values())


async def _run_chains(
    groups: Sequence[Sequence[T]], step: Callable[[T], Awaitable[bool]], limit: int
) -> bool:
    """Run each group's steps in order, groups concurrently (at most `limit` at once); a
    step returning False stops its group. True when every step returned True. An exception
    stops its group and is raised once every group has finished (none is left running)."""
    # A page (≤ 200 jobs) or a slice of a reconcile pass fits under the limit: then no gate
    # (acquiring one cost as much as a redis command per job).
    gate: asyncio.Semaphore | contextlib.nullcontext[None] = (
        asyncio.Semaphore(limit) if len(groups) > limit else contextlib.nullcontext()
    )
    ok = True

    async def run(group: Sequence[T]) -> None:
        nonlocal ok
        async with gate:
            for item in group:
                if not await step(item):
                    ok = False
                    return

    outcomes = await asyncio.gather(*(run(g) for g in groups), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return ok


_NOT_READ: Final[Any] = object()


@dataclass(slots=True)
class _Page:
    """What a wave read before its jobs ran: raw cache entries, each taken once (a second job
    on the same workload reads redis again: the first may have changed its entry)."""

    cached: dict[str, bytes | None]
    failed: BaseException | None = None
    """The read's error (redis down): each job meets it as it would have met its own read."""


def _again(exc: BaseException) -> BaseException:
    """A job's own copy of the wave's read error, caused by it (one object per raise: a shared
    one would grow a traceback each time)."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        copy = RedisError(str(exc))
    copy.__cause__ = exc
    return copy


@dataclass(frozen=True, slots=True)
class _ReadAhead:
    """The poll of the next page, asked for while the current page's jobs run."""

    cursor: int
    started: float
    task: asyncio.Task[PollResult]

    @classmethod
    def start(cls, explorer: ExplorerClient, cursor: int, now: float) -> _ReadAhead:
        task = asyncio.get_running_loop().create_task(explorer.poll(cursor), name="poll-ahead")
        # a page dropped unread must not log "exception was never retrieved"
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return cls(cursor, now, task)


class Engine:
    def __init__(
        self,
        *,
        identity: Identity,
        explorer: ExplorerClient,
        cache: ReservationStore,
        outbox: Outbox,
        provisioners: Mapping[str, Provisioner],
        converge: Mapping[str, Callable[[list[Reservation]], Awaitable[None]]] | None = None,
        metrics: Metrics | None = None,
        poll_interval: float = 10.0,
        reconcile_interval: float = 300.0,
        replay_interval: float = 600.0,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.identity = identity
        self.explorer = explorer
        self.cache = cache
        self.outbox = outbox
        self.provisioners = dict(provisioners)
        self.converge = dict(converge or {})
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.reconcile_interval = reconcile_interval
        self.replay_interval = replay_interval
        self._backoff = backoff()
        self.live: dict[str, Reservation] = {}
        self.counters = Counters()
        self._by_type: Counter[str] = Counter()
        self.cursor = 0
        self._attempts: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._replay = False
        self.lock = asyncio.Lock()
        """Held while a job or a re-application runs: one change at a time per gateway."""
        self.polls = 0
        self._poll_started = float("inf")  # loop time the current poll was asked for
        self._ahead: _ReadAhead | None = None
        self.jobs_done = 0

    # -- start-up ------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the cache (the live state) into memory and rebuild the counters from it."""
        reservations, bad = await self.cache.list()
        if bad:
            log.error(
                "cache: %d undecodable entries kept untouched (%s); they are not served",
                len(bad),
                ", ".join(bad[:5]),
            )
        self.live = {r.id: r for r in reservations}
        self._by_type = Counter(r.type for r in self.live.values())
        self.counters = Counters.from_reservations(self.live.values())
        self._publish_counts()
        log.info(
            "cache: %d live reservations (%s)",
            len(self.live),
            ", ".join(f"{k}={v}" for k, v in self.counters.as_dict().items()),
        )

    def _publish_counts(self) -> None:
        if self.metrics is None:
            return
        counts = dict.fromkeys(TYPE_RANK, 0)
        counts.update(self._by_type)
        self.metrics.set_live(counts)

    # -- reconcile (level-triggered) -------------------------------------------------------------

    async def reconcile(self, *, rewrite_cache: bool = False) -> int:
        """Apply every live reservation again; returns how many were applied.

        With `rewrite_cache` the cache entries are written back first (redis lost its data).
        Failures are logged, never reported to the explorer: the workload was accepted before.
        """
        applied = 0
        live = sorted(self.live.values(), key=lambda r: (TYPE_RANK.get(r.type, 0), r.id))
        if rewrite_cache:
            async with self.lock:  # a job must not remove an entry we then write back
                await asyncio.gather(*(self.cache.put(r) for r in list(self.live.values())))
        for rtype, fn in self.converge.items():
            async with self.lock:
                current = [r for r in self.live.values() if r.type == rtype]
                await fn(current)
            applied += len(current)
        live = [r for r in live if r.type not in self.converge and r.type in self.provisioners]
        counted = [0]
        for _, wave in itertools.groupby(live, key=lambda r: _wave(TYPE_RANK.get(r.type, 0))):
            items = list(wave)
            groups = [[items[i] for i in chain] for chain in chains(items)]
            for start in range(0, len(groups), MAX_CONCURRENT_JOBS):
                async with self.lock:  # jobs get their turn between two slices
                    await _run_chains(
                        groups[start : start + MAX_CONCURRENT_JOBS],
                        lambda r: self._reapply(r, counted),
                        MAX_CONCURRENT_JOBS,
                    )
        applied += counted[0]
        return applied

    async def _reapply(self, listed: Reservation, counted: list[int]) -> bool:
        """Provision the live reservation with `listed`'s id again (the caller holds the lock;
        a job may have replaced the entry since the pass listed it, e.g. the cache hit of a
        poll from 0 right after a restart, or removed it); redis trouble is raised."""
        r = self.live.get(listed.id)
        provisioner = None if r is None else self.provisioners.get(r.type)
        if r is None or provisioner is None or r.type in self.converge:
            return True  # decommissioned (or changed type) meanwhile
        try:
            with _quiet(provisioner), reapplying():
                async with asyncio.timeout(JOB_TIMEOUT):
                    await provisioner.provision(r)
            counted[0] += 1
        except Exception as exc:
            if _redis_trouble(exc):
                # As a RedisError (a primitive may have wrapped it in a ProvisionError): the
                # caller retries the whole pass once redis is back.
                raise RedisError(f"reconcile interrupted: {exc}") from exc
            if isinstance(exc, ProvisionError) and not _is_transient(exc):
                log.warning("reconcile: %s %s cannot be re-applied: %s", r.type, r.id, exc)
            elif _is_transient(exc):
                log.info("reconcile: %s %s skipped this time: %s", r.type, r.id, exc)
            else:
                log.exception("reconcile: %s %s raised", r.type, r.id)
        return True

    # -- the poll loop ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Poll now (tests, signals)."""
        self._wake.set()

    def request_replay(self) -> None:
        """Ask the explorer for everything again from the start (redis lost its data)."""
        self._replay = True
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def run(self) -> None:
        """Poll and process until cancelled.

        Every `replay_interval` the cursor goes back to 0, as after a restart: a delete the
        explorer failed to queue for us (or that we missed) is still seen, and results it has
        not acknowledged are sent again.
        """
        try:
            await self._run()
        finally:
            self._drop_read_ahead()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_replay = loop.time()
        while True:
            started = loop.time()
            if started - last_replay >= self.replay_interval:
                last_replay = started
                self._replay = True
            try:
                advanced = await self.poll_once(read_ahead=True)
            except Exception:
                log.exception("poll from %d failed unexpectedly; retrying", self.cursor)
                advanced = None
            if advanced is None:  # failure: back off (at least a poll interval)
                await self._pause(max(self.poll_interval, self._backoff.next_delay()))
                continue
            self._backoff.reset()
            if advanced:
                continue  # more may be waiting: catch up without the poll pause
            await self._pause(self.poll_interval - (loop.time() - started))

    async def poll_once(self, *, read_ahead: bool = False) -> bool | None:
        """One poll and its batch. True: a full page was processed (poll again now); False:
        done; None: failed (the cursor is kept, the same batch will be asked for again).

        With `read_ahead` (the poll loop), a full page of new work has the next page asked for
        while its jobs run, and the next call takes that answer: during a catch-up of
        thousands of workloads the explorer's answer no longer waits for the jobs, nor the
        jobs for the answer. The page read ahead is a poll made a little earlier, nothing
        else: it is dropped when the cursor does not move to where it was asked from (the
        page failed, or a replay starts from 0)."""
        self.polls += 1
        ahead, self._ahead = self._ahead, None
        if self._replay:
            self._replay = False
            self.cursor = 0
        loop = asyncio.get_running_loop()
        if ahead is not None and ahead.cursor != self.cursor:
            ahead.task.cancel()
            ahead = None
        # A poll answer may have been written before a PUT we made meanwhile was handled;
        # results acknowledged after this moment are not re-sent for it (see _cache_hit).
        self._poll_started = loop.time() if ahead is None else ahead.started
        try:
            if ahead is not None:
                batch = await ahead.task
            else:
                batch = await self.explorer.poll(self.cursor)
        except PollDecodeError as exc:
            log.error(
                "poll from %d: %s; cursor kept at %d (not rewound)", self.cursor, exc, self.cursor
            )
            return None
        except ExplorerError as exc:
            log.warning("poll from %d failed: %s", self.cursor, exc)
            return None
        jobs: list[Job] = []
        waiting = 0
        for item in batch.items:
            if self._awaiting_delivery(item):
                waiting += 1
                continue
            try:
                jobs.append(job_from_item(item))
            except WorkloadError as exc:
                try:
                    await self._answer_malformed(item, exc)
                except Exception as inner:
                    log.warning("batch from %d interrupted: %s", self.cursor, inner)
                    return None
        # A full page of new work means more is waiting: poll again without the pause
        # (catch-up). Not for a page of items we answered already: once nothing newer
        # qualifies the explorer serves its queue of unanswered workloads with X-Last-Id =
        # `from`, so the cursor creeps by one and, while 200 results wait for delivery,
        # rushing would fetch the same page again and again.
        previous, following = self.cursor, batch.last_id + 1
        new_work = len(batch.items) > waiting
        more = len(batch.items) >= POLL_PAGE_SIZE and following > previous and new_work
        if read_ahead and more:
            self._ahead = _ReadAhead.start(self.explorer, following, loop.time())
        jobs.sort(key=rank)  # stable: equal ranks keep the explorer's order
        for _, wave in itertools.groupby(jobs, key=lambda job: _wave(rank(job))):
            if not await self._run_wave(list(wave)):
                self._drop_read_ahead()
                return None  # the batch is asked for again; what was done is cached
        self.cursor = following
        return more

    def _drop_read_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.task.cancel()

    def _awaiting_delivery(self, item: Any) -> bool:
        """An item we answered in this run whose result is still on its way: nothing to do.

        Once nothing newer qualifies, the explorer serves every unanswered workload again on
        each poll, so while a large backlog of results is being delivered the same items come
        back poll after poll; they are skipped before parsing. (An expiry noticed this way
        waits for the next poll, once the result is delivered.)"""
        if not isinstance(item, dict) or item.get("next_action") == NEXT_ACTION_DELETE:
            return False
        real_id = item_real_id(item)
        return real_id is not None and self.outbox.has_pending(real_id, "result")

    async def _run_wave(self, jobs: list[Job]) -> bool:
        """Run jobs of one wave concurrently, in chains (see `chains`); False when one must
        be retried (its chain stopped there; the other chains went on)."""
        groups = [[jobs[i] for i in chain] for chain in chains([j.reservation for j in jobs])]
        async with self.lock:
            page = await self._read_page(jobs)
            return await _run_chains(
                groups, lambda job: self._attempt(job, page), MAX_CONCURRENT_JOBS
            )

    async def _read_page(self, jobs: Sequence[Job]) -> _Page | None:
        """The cache entries of the wave's jobs in one command (one await for the wave, not
        one per job). When redis fails, each job meets the error as it would have met its own
        read (without trying again: one failed round trip per wave, as before)."""
        keys = list(dict.fromkeys(job.key for job in jobs))
        try:
            raw = await self.cache.get_many(keys)
        except _TRANSIENT as exc:
            return _Page({}, exc)
        return _Page(dict(zip(keys, raw, strict=True)))

    async def _attempt(self, job: Job, page: _Page | None = None) -> bool:
        """Handle one job; False if it must be retried with its batch."""
        try:
            await self._handle(job, page)
        except Exception as exc:
            if _redis_trouble(exc):
                # Our own storage is down: wait for it however long it takes.
                log.warning("job %s waits for redis: %s", job.real_id, exc)
                return False
            attempts = self._attempts.get(job.real_id, 0) + 1
            self._attempts[job.real_id] = attempts
            if not _is_transient(exc):
                log.exception("job %s (%s) raised", job.real_id, job.reservation.type)
            if attempts < MAX_TRANSIENT_ATTEMPTS:
                log.warning(
                    "job %s (%s) interrupted (attempt %d): %s; batch from %d will be retried",
                    job.real_id,
                    job.reservation.type,
                    attempts,
                    exc,
                    self.cursor,
                )
                return False
            log.error(
                "job %s failed %d times: %s; answering with an error",
                job.real_id,
                attempts,
                exc,
            )
            try:
                await self._fail(job, f"gateway could not apply the workload: {exc}")
            except Exception as inner:
                log.warning("cannot answer %s yet: %s", job.real_id, inner)
                return False
        self._attempts.pop(job.real_id, None)
        return True

    # -- one job ---------------------------------------------------------------------------------

    async def handle(self, job: Job) -> str:
        """Provision or decommission one workload on its own (takes the lock)."""
        async with self.lock:
            return await self._handle(job)

    async def _handle(self, job: Job, page: _Page | None = None) -> str:
        """Provision or decommission one workload; logs one line and returns the outcome.
        The caller holds the lock (concurrent jobs of one wave share it); `page`: what the
        wave read ahead."""
        r = job.reservation
        action = "decommission" if r.to_delete or r.expired() else "provision"
        started = time.monotonic()
        outcome = "error"
        try:
            if action == "decommission":
                outcome = await self._decommission(job, page)
            else:
                outcome = await self._provision(job, page)
            return outcome
        except Exception as exc:
            outcome = "retry" if _is_transient(exc) else "crash"
            raise
        finally:
            elapsed = time.monotonic() - started
            log.info(
                Fields(
                    "job",
                    id=job.real_id if job.key == job.real_id else f"{job.real_id} (ref {job.key})",
                    type=r.type,
                    action=action,
                    outcome=outcome,
                    duration_ms=round(elapsed * 1000, 1),
                )
            )
            self.jobs_done += 1
            if self.metrics is not None:
                self.metrics.job_done(r.type, action, outcome, elapsed)

    def _result(self, job: Job, state: ResultState, message: str = "", data: bytes = b"") -> Result:
        return sign_result(
            Result(
                type=job.reservation.type,
                id=job.real_id,
                created=GoTime.now_utc(),
                state=state,
                message=message,
                data_json=data,
            ),
            self.identity,
        )

    async def _fail(self, job: Job, message: str) -> str:
        """Error result + DELETE (the explorer then stops sending the workload); not cached."""
        if self.outbox.has_pending(job.real_id, "delete"):
            return "failed-pending"
        result = self._result(job, ResultState.ERROR, message)
        await self.outbox.put_result(job.real_id, wire_result(result, job.category))
        await self.outbox.delete(job.real_id)
        log.warning("workload %s (%s) refused: %s", job.real_id, job.reservation.type, message)
        return "failed"

    def _acknowledged(self, job: Job, cached: Reservation) -> bool:
        theirs = job.explorer_result
        return (
            bool(cached.result.signature)
            and theirs.signature == cached.result.signature
            and theirs.state == int(cached.result.state)
        )

    async def _cached(self, job: Job, page: _Page | None = None) -> Reservation | None:
        """The cache entry; a corrupt one counts as absent (it gets overwritten or removed).

        A workload live in memory but missing from redis is one whose cache redis lost (a
        restart without persistence, FLUSHALL) before the restore wrote it back: it is written
        back here, never taken for a new workload (provisioned and answered a second time)."""
        raw = _NOT_READ if page is None else page.cached.pop(job.key, _NOT_READ)
        if page is not None and page.failed is not None:
            raise _again(page.failed)
        try:
            if raw is _NOT_READ:
                cached = await self.cache.get(job.key)
            else:
                cached = None if raw is None else self.cache.decode(job.key, raw)
        except CacheDecodeError as exc:
            log.error("%s; treating it as not cached", exc)
            return None
        if cached is None and (remembered := self.live.get(job.key)) is not None:
            await self.cache.put(remembered)
            return remembered
        return cached

    async def _provision(self, job: Job, page: _Page | None = None) -> str:
        r = job.reservation
        cached = await self._cached(job, page)
        if cached is not None:
            return await self._cache_hit(job, cached)
        if self.outbox.has_pending(job.real_id, "delete"):
            return "failed-pending"  # refused before; the explorer has not heard yet
        provisioner = self.provisioners.get(r.type)
        if provisioner is None:
            return await self._fail(job, f"type of reservation not supported: {r.type}")
        try:
            async with asyncio.timeout(JOB_TIMEOUT):
                data = await provisioner.provision(r)
        except Exception as exc:
            if _is_transient(exc):
                raise
            if isinstance(exc, ProvisionError):
                return await self._fail(job, str(exc))
            log.exception("provisioner %s crashed on %s", r.type, job.real_id)
            return await self._fail(job, f"internal error while provisioning: {type(exc).__name__}")
        result = self._result(job, ResultState.OK, data=data or b"")
        stored = r.with_result(result)
        # Cached and queued in one atomic redis call: a result must never go out for a
        # workload whose cache write failed (it would be provisioned and answered again).
        self.counters.increment(r.type)  # the stats queued with the result count it
        try:
            await self.outbox.put_result(
                job.real_id,
                wire_result(result, job.category),
                stats=self.counters.as_dict(),
                entry=self.cache.entry(stored),
            )
        except BaseException:
            self.counters.decrement(r.type)  # neither written: as if never provisioned
            raise
        self.live[job.key] = stored
        self._by_type[r.type] += 1
        if self.metrics is not None:  # only this type's count changed (all were set at load)
            self.metrics.set_live({r.type: self._by_type[r.type]})
        return "ok"

    async def _cache_hit(self, job: Job, cached: Reservation) -> str:
        r = job.reservation
        if job.key not in self.live:  # written behind our back (another process, a restore)
            self._by_type[cached.type] += 1
            self.counters.increment(cached.type)
            self._publish_counts()
        self.live[job.key] = cached
        if cached.user_id != r.user_id or cached.data != r.data or cached.type != r.type:
            # Only possible through a reference (same explorer id means same workload).
            return await self._fail(
                job,
                f"reference {job.key} is served for another owner or with different data;"
                " a migrated workload must be identical to the one it replaces",
            )
        if not r.reference and cached.reference and cached.result.id != job.real_id:
            return "superseded"  # the old workload of a migration: its successor owns it now
        if r.reference and cached.result.id != job.real_id:
            # Migration to a new workload (reference): answer the new ID with our result.
            result = self._result(
                job,
                ResultState(int(cached.result.state)),
                cached.result.message,
                cached.result.data_json,
            )
            stored = r.with_result(result)
            await self.cache.put(stored)
            self.live[job.key] = stored
            await self.outbox.put_result(job.real_id, wire_result(result, job.category))
            return "migrated"
        if self._acknowledged(job, cached):
            return "cached"
        if self.outbox.has_pending(job.real_id, "result"):
            return "cached-pending"
        if self.outbox.acknowledged_since(job.real_id, "result", self._poll_started):
            return "cached-delivered"  # the answer predates our PUT, which did arrive
        if cached.result.created.year <= 1970 and cached.result.data_json in (b"", b"null"):
            # Go's "nil result" (spec §6.2 step 3): nothing to send.
            return "cached"
        await self.outbox.put_result(job.real_id, wire_result(cached.result, job.category))
        return "resent"

    async def _decommission(self, job: Job, page: _Page | None = None) -> str:
        r = job.reservation
        cached = await self._cached(job, page)
        if cached is None:
            await self.cache.remove(job.key)  # drops a corrupt entry, no-op otherwise
            await self._clean_orphan(job)
            if not self.outbox.has_pending(job.real_id, "delete"):
                await self.outbox.delete(job.real_id)
                return "deleted-uncached"
            return "delete-pending"
        if r.reference and cached.user_id != r.user_id:
            # Someone else's reservation behind a reference: never tear it down.
            await self.outbox.delete(job.real_id)
            return "deleted-foreign-reference"
        if not r.reference and cached.reference and cached.result.id != job.real_id:
            # The old workload of a migration: the reservation lives on for its successor.
            await self.outbox.delete(job.real_id)
            return "deleted-superseded"
        provisioner = self.provisioners.get(cached.type)
        if cached.result.state == ResultState.ERROR:
            log.info("workload %s was never provisioned; only un-caching it", job.key)
        elif provisioner is None:
            log.warning(
                "no provisioner for %s (%s); un-caching without teardown", cached.type, job.key
            )
        else:
            try:
                async with asyncio.timeout(JOB_TIMEOUT):
                    await provisioner.decommission(cached)
            except ProvisionError as exc:
                if _is_transient(exc):
                    raise
                log.error("decommission of %s (%s) failed: %s; kept", job.key, cached.type, exc)
                return "decommission-failed"
        await self.cache.remove(job.key)
        if self.live.pop(job.key, None) is not None:
            self._by_type[cached.type] -= 1
            self.counters.decrement(cached.type)
        self._publish_counts()
        await self.outbox.delete(job.real_id, stats=self.counters.as_dict())
        return "deleted"

    async def _clean_orphan(self, job: Job) -> None:
        """Tear down what a crash may have left: a workload provisioned but killed before it
        was cached, then deleted. Primitives only ever remove their user's own entries; a name
        another live reservation uses is left alone."""
        r = job.reservation
        provisioner = self.provisioners.get(r.type)
        if provisioner is None or not r.data or r.type in self.converge:
            return
        name = _domain_of(r)
        if name is None or any(_domain_of(other) == name for other in self.live.values()):
            return
        try:
            with _quiet(provisioner):
                async with asyncio.timeout(JOB_TIMEOUT):
                    await provisioner.decommission(r)
        except Exception as exc:
            if _redis_trouble(exc):
                raise
            log.info("cleanup of uncached %s %s: %s", r.type, job.real_id, exc)

    async def _answer_malformed(self, item: Any, exc: WorkloadError) -> None:
        if exc.real_id is None:
            log.error("poll item skipped (no id to answer to): %s", exc.message)
            return
        if self.outbox.has_pending(exc.real_id):
            return
        type_name = WORKLOAD_TYPES.get(exc.category, "UNKNOWN")
        wants_delete = isinstance(item, dict) and item.get("next_action") == NEXT_ACTION_DELETE
        if not wants_delete:
            result = sign_result(
                Result(
                    type=type_name,
                    id=exc.real_id,
                    created=GoTime.now_utc(),
                    state=ResultState.ERROR,
                    message=exc.message,
                ),
                self.identity,
            )
            await self.outbox.put_result(exc.real_id, wire_result(result, exc.category))
        await self.outbox.delete(exc.real_id)
        log.warning(
            Fields(
                "job",
                id=exc.real_id,
                type=type_name,
                action="decommission" if wants_delete else "provision",
                outcome="malformed",
                reason=exc.message,
            )
        )
        if self.metrics is not None:
            self.metrics.job_malformed(type_name)

    def live_of_type(self, rtype: str) -> list[Reservation]:
        return [r for r in self.live.values() if r.type == rtype]

    def all_live(self) -> Iterable[Reservation]:
        return self.live.values()
