"""Names outside the gateway's own domains are served only for whoever proves control of them.

A proxy or reverse proxy on a name outside every managed domain and outside every zone the same
user delegated, and a delegated zone that is not inside another zone of the same user, need a
proof (`proof.py`: TXT `_tfgateway.<name>` holding the user id). Names under a managed domain
are the gateway's to hand out; names in a user's delegated zone are covered by the zone's proof.

What happens to a claim (`claim`, inside the caller's check-and-set):
- a new workload without a proof is refused with the lookup's reason (its error result);
- a live workload (the engine re-applying it) keeps its data while its record says proven or
  grandfathered; one whose proof lapsed is suspended: its data is withdrawn (the router and
  CoreDNS stop serving it), the reservation stays live, and it comes back by itself once a
  recheck finds the proof again (the next reconcile restores it). A suspended name is held by
  nobody: a user who proves control may claim it;
- at the first start that enforces proofs (an upgrade from the Go daemon, or from
  `--name-proof first-come`), every live name already served is grandfathered: kept, logged,
  and checked first after `--proof-grace`.

Rechecks (`recheck_due`, run by the agent periodically) look up every record that is due:
proven and grandfathered names every `--proof-recheck-interval` (±10 %), suspended ones and
those whose last lookup had no usable answer every `retry_interval`. Only a definitive absent
answer suspends; a resolver outage never takes a live name down.

Records: redis hash `tfgateway:name_proofs`, field `<kind> <name>` (kind `proxy` or `zone`),
value JSON `{"user","state","since","checked","due","reason"}` (times in unix seconds). The key
`tfgateway:name_proofs:enforced` marks that live names were grandfathered once.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Final

import redis.asyncio

from tfgateway.primitives.coredns_redis import as_text
from tfgateway.primitives.proof import ProofChecker, ProofOutcome, Verdict
from tfgateway.primitives.provisioner import ProvisionError, is_reapplying
from tfgateway.store.batch import AutoPipeline, as_batch
from tfgateway.store.transaction import Read, Transaction, TransactionConflictError, run_transaction

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_RECHECK_INTERVAL",
    "ENFORCED_KEY",
    "PROOFS_KEY",
    "NameProofs",
    "ProofMode",
    "ProofRecord",
    "ProofState",
    "RecheckSummary",
    "Withdraw",
    "read_records",
    "record_field",
]

log = logging.getLogger(__name__)

PROOFS_KEY: Final = "tfgateway:name_proofs"
ENFORCED_KEY: Final = "tfgateway:name_proofs:enforced"
DEFAULT_RECHECK_INTERVAL: Final = 3600.0
DEFAULT_GRACE: Final = 7 * 86400.0
MAX_RETRY_INTERVAL: Final = 300.0

PROXY: Final = "proxy"
ZONE: Final = "zone"
KINDS: Final = (PROXY, ZONE)


class ProofMode(enum.StrEnum):
    REQUIRED = "required"
    FIRST_COME = "first-come"
    """The Go daemon's behaviour: any user may claim any free name, no proof asked."""


class ProofState(enum.StrEnum):
    PROVEN = "proven"
    GRANDFATHERED = "grandfathered"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class ProofRecord:
    user: str
    state: ProofState
    since: float
    checked: float
    due: float
    reason: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | str | None) -> ProofRecord | None:
        text = as_text(raw)
        if not text:
            return None
        try:
            doc = json.loads(text)
            return cls(
                user=str(doc["user"]),
                state=ProofState(doc["state"]),
                since=float(doc["since"]),
                checked=float(doc["checked"]),
                due=float(doc["due"]),
                reason=str(doc.get("reason", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def serving(self) -> bool:
        return self.state is not ProofState.SUSPENDED


def record_field(kind: str, name: str) -> str:
    return f"{kind} {name}"


Withdraw = Callable[[Transaction, str, str], Awaitable[None]]
"""Queue, in the caller's transaction, the removal of `user`'s data for `name` (route, zone)."""


@dataclass
class RecheckSummary:
    checked: int = 0
    proven: int = 0
    suspended: int = 0
    restored: int = 0
    unknown: int = 0


class NameProofs:
    """The proof policy of one gateway, its records in redis, and the rechecks."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | AutoPipeline,
        *,
        mode: ProofMode = ProofMode.REQUIRED,
        checker: ProofChecker | None = None,
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
        grace: float = DEFAULT_GRACE,
        managed_domains: Collection[str] = (),
        trusted_users: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`managed_domains`: the gateway's own (`--domains`): names under them never need a
        proof. `trusted_users`: users whose claims need none (an operator's own source)."""
        if mode is ProofMode.REQUIRED and checker is None:
            raise ValueError("required name proofs need a ProofChecker")
        self._batch = as_batch(redis_client)
        self.mode = mode
        self.checker = checker
        self.recheck_interval = recheck_interval
        self.retry_interval = min(recheck_interval, MAX_RETRY_INTERVAL)
        self.grace = grace
        self.managed_domains = frozenset(managed_domains)
        self.trusted_users = trusted_users
        self.clock = clock
        self.upgrading = False
        """Set by `start` when this is the first start enforcing proofs: re-applied live names
        without a record are grandfathered until `settle`."""
        self._withdraw: dict[str, Withdraw] = {}

    @classmethod
    def first_come(cls, redis_client: redis.asyncio.Redis | AutoPipeline) -> NameProofs:
        """No proof asked (the Go daemon's behaviour)."""
        return cls(redis_client, mode=ProofMode.FIRST_COME)

    @property
    def enforced(self) -> bool:
        return self.mode is ProofMode.REQUIRED

    def register(self, kind: str, withdraw: Withdraw) -> None:
        """How to take `kind`'s data down when its proof lapses (by the stores that write it)."""
        self._withdraw[kind] = withdraw

    def reads(self, kind: str, name: str) -> list[Read]:
        """The read `claim`/`release` make, to prefetch with the caller's other reads."""
        return [("hget", PROOFS_KEY, record_field(kind, name))]

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """At start-up: enforcing for the first time (no marker)? Then grandfather live names.
        In first-come mode the marker is dropped, so a later switch grandfathers again."""
        if not self.enforced:
            await self._batch.execute("DEL", ENFORCED_KEY)
            return
        self.upgrading = not await self._batch.execute("EXISTS", ENFORCED_KEY)
        if self.upgrading:
            log.warning(
                "name proofs: enforced for the first time on this gateway; live proxies and "
                "delegations on names without proof are kept (grandfathered) and checked after "
                "%s",
                _duration(self.grace),
            )

    async def settle(self) -> None:
        """After a complete re-application: every live name has its record; stop grandfathering."""
        if not self.enforced:
            return
        await self._batch.execute("SET", ENFORCED_KEY, str(int(self.clock())))
        if self.upgrading:
            self.upgrading = False
            log.info("name proofs: live names grandfathered; new claims need proof")

    # -- claims (inside the caller's transaction) -----------------------------------------------

    async def claim(
        self,
        txn: Transaction,
        kind: str,
        name: str,
        user: str,
        *,
        held: bool,
        memo: dict[tuple[str, str], Verdict],
    ) -> bool:
        """Whether `user` may (keep) serve(ing) `name`, a name that needs proof. Queues the
        record's update. `held`: the user's data for `name` is in redis now. `memo` keeps
        lookups across re-runs of the transaction. Raises ProvisionError for a new workload
        without proof; for a re-application returns False when the name is suspended (the
        caller withdraws its data)."""
        if not self.enforced or user in self.trusted_users:
            return True
        field = record_field(kind, name)
        record = ProofRecord.decode(await txn.hget(PROOFS_KEY, field))
        now = self.clock()
        if not is_reapplying():
            verdict = await self._lookup(name, user, memo)
            if not verdict.proven:
                raise ProvisionError(
                    f"no proof of control: {verdict.reason}; a name outside this gateway's "
                    f"domains needs a TXT record at _tfgateway.<name> holding your user id {user}"
                )
            self._put(txn, field, self._proven(user, now, record))
            return True
        if record is not None and record.user == user:
            return record.serving
        if held and self.upgrading:
            due = now + self.grace
            reason = f"served before proofs were enforced; first check {_when(due)}"
            grandfathered = ProofRecord(user, ProofState.GRANDFATHERED, now, 0.0, due, reason)
            self._put(txn, field, grandfathered)
            log.info(
                "name proofs: %s %s of user %s grandfathered (no proof yet); checked from %s",
                kind,
                name,
                user,
                _when(due),
            )
            return True
        verdict = await self._lookup(name, user, memo)
        if verdict.proven:
            self._put(txn, field, self._proven(user, now, record))
            return True
        if verdict.outcome is ProofOutcome.UNKNOWN:
            return held  # keep what is served; looked up again at the next pass
        self._put(txn, field, self._suspended(user, now, verdict.reason))
        log.warning("name proofs: %s %s of user %s suspended: %s", kind, name, user, verdict.reason)
        return False

    async def release(self, txn: Transaction, kind: str, name: str, user: str) -> None:
        """Forget `user`'s record for `name` (its workload is gone, or needs no proof now)."""
        field = record_field(kind, name)
        record = ProofRecord.decode(await txn.hget(PROOFS_KEY, field))
        if record is not None and record.user == user:
            txn.hdel(PROOFS_KEY, field)

    async def suspended_zone(self, txn: Transaction, user: str, zones: Sequence[str]) -> str | None:
        """The first of `zones` that `user` delegated and that is suspended now, if any."""
        if not zones:
            return None
        fields = [record_field(ZONE, z) for z in zones]
        for zone, raw in zip(zones, await txn.hmget(PROOFS_KEY, fields), strict=True):
            record = ProofRecord.decode(raw)
            if record is not None and record.user == user and not record.serving:
                return zone
        return None

    def _put(self, txn: Transaction, field: str, record: ProofRecord) -> None:
        txn.hset(PROOFS_KEY, field, record.encode())

    def _suspended(self, user: str, now: float, reason: str) -> ProofRecord:
        return ProofRecord(user, ProofState.SUSPENDED, now, now, now + self.retry_interval, reason)

    def _proven(self, user: str, now: float, before: ProofRecord | None) -> ProofRecord:
        kept = before is not None and before.user == user and before.state is ProofState.PROVEN
        since = before.since if kept and before is not None else now
        due = now + self.recheck_interval * random.uniform(0.9, 1.1)
        return ProofRecord(user, ProofState.PROVEN, since, now, due, "")

    async def _lookup(self, name: str, user: str, memo: dict[tuple[str, str], Verdict]) -> Verdict:
        verdict = memo.get((name, user))
        if verdict is None:
            assert self.checker is not None
            verdict = memo[(name, user)] = await self.checker.check(name, user)
        return verdict

    # -- rechecks --------------------------------------------------------------------------------

    async def records(self) -> list[tuple[str, str, ProofRecord]]:
        return await read_records(self._batch)

    async def counts(self) -> dict[str, int]:
        """Records by state (every state present, 0 when none)."""
        counts = dict.fromkeys((s.value for s in ProofState), 0)
        for _, _, record in await self.records():
            counts[record.state.value] += 1
        return counts

    async def recheck_due(self) -> RecheckSummary:
        """Look up every record that is due and apply the outcome (suspend on a definitive
        absent answer, restore on a proof found again). Restored names get their data back
        from the next re-application of their workload."""
        summary = RecheckSummary()
        if not self.enforced:
            return summary
        now = self.clock()
        due = [(k, n, r) for k, n, r in await self.records() if r.due <= now]
        await asyncio.gather(*(self._recheck(k, n, r, summary) for k, n, r in due))
        return summary

    async def _recheck(
        self, kind: str, name: str, seen: ProofRecord, summary: RecheckSummary
    ) -> None:
        assert self.checker is not None
        verdict = await self.checker.check(name, seen.user)
        field = record_field(kind, name)
        outcome: list[str] = []

        async def body(txn: Transaction) -> None:
            outcome.clear()
            current = ProofRecord.decode(await txn.hget(PROOFS_KEY, field))
            if current != seen:
                return  # claimed, released or rechecked meanwhile: that decision stands
            now = self.clock()
            if verdict.proven:
                self._put(txn, field, self._proven(seen.user, now, seen))
                outcome.append("restored" if seen.state is ProofState.SUSPENDED else "proven")
            elif verdict.outcome is ProofOutcome.UNKNOWN or seen.state is ProofState.SUSPENDED:
                reason = verdict.reason if seen.state is ProofState.SUSPENDED else seen.reason
                retry = replace(seen, checked=now, due=now + self.retry_interval, reason=reason)
                self._put(txn, field, retry)
                outcome.append("unknown" if verdict.outcome is ProofOutcome.UNKNOWN else "absent")
            else:
                withdraw = self._withdraw.get(kind)
                if withdraw is not None:
                    await withdraw(txn, name, seen.user)
                self._put(txn, field, self._suspended(seen.user, now, verdict.reason))
                outcome.append("suspended")

        try:
            await run_transaction(self._batch, body)
        except TransactionConflictError:
            return  # busy name: the next pass looks again
        summary.checked += 1
        if not outcome:
            return
        result = outcome[0]
        if result == "proven":
            summary.proven += 1
        elif result == "restored":
            summary.restored += 1
            log.info("name proofs: %s %s of user %s proven again; restored", kind, name, seen.user)
        elif result == "suspended":
            summary.suspended += 1
            log.warning(
                "name proofs: %s %s of user %s suspended (was %s): %s",
                kind,
                name,
                seen.user,
                seen.state,
                verdict.reason,
            )
        elif result == "unknown":
            summary.unknown += 1


async def read_records(
    redis_client: redis.asyncio.Redis | AutoPipeline,
) -> list[tuple[str, str, ProofRecord]]:
    """(kind, name, record) of every proof record, sorted by name (`tfgateway status` too)."""
    out = []
    for raw_field, raw in (await redis_client.hgetall(PROOFS_KEY)).items():
        kind, _, name = (as_text(raw_field) or "").partition(" ")
        record = ProofRecord.decode(raw)
        if kind in KINDS and name and record is not None:
            out.append((kind, name, record))
    return sorted(out, key=lambda item: (item[1], item[0]))


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
