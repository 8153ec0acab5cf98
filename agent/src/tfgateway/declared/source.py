"""The workloads file as a source of workloads: applied at start, again on SIGHUP and whenever
the file changes, by difference (entry name and content) against what was applied before.

- Only what differs is touched: a new or changed entry is provisioned (a changed one's old
  data is then cleaned up), a removed one decommissioned; unchanged entries cost nothing.
- The same provisioners as explorer workloads, as owner `0` (`file.OPERATOR`).
- A file that cannot be read or parsed changes nothing (logged once per version, shown by
  `tfgateway status`); a bad entry is not served and the others are.
- What was applied is persisted (`records.py`), so a restart with a changed file removes the
  entries that disappeared meanwhile.
- redis trouble (transient) leaves the entry pending; it is tried again a moment later.
- An entry refused because another owner holds its name (an explorer user's workload) is
  tried again every `HELD_RETRY_INTERVAL` on its own: the name is the file's soon after its
  holder lets go, without a reload (and without a log line per attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from redis.exceptions import RedisError

from tfgateway.declared.file import (
    KINDS,
    DeclaredFile,
    Entry,
    EntryError,
    FileError,
    entry_reservation,
    load,
)
from tfgateway.declared.records import (
    ERROR,
    FILE_KEY,
    OK,
    PENDING,
    RECORDS_KEY,
    FileState,
    Record,
    read_all,
)
from tfgateway.engine.engine import chains
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.provisioner import (
    NameHeldError,
    Provisioner,
    ProvisionError,
    reapplying,
)
from tfgateway.store.batch import AutoPipeline
from tfgateway.telemetry.metrics import Metrics

__all__ = ["DeclaredSource", "Summary"]

log = logging.getLogger(__name__)

POLL_INTERVAL: Final = 1.0
RETRY_INTERVAL: Final = 5.0
HELD_RETRY_INTERVAL: Final = 5.0
MAX_CONCURRENT: Final = 256
_RANK: Final = {kind: i for i, kind in enumerate(KINDS)}
_TYPE_RANK: Final = {rtype: i for i, rtype in enumerate(KINDS.values())}


def _wave(rtype: str) -> int:
    """Delegations (the zones other names live in) before everything else."""
    return 0 if rtype == "domain_delegate" else 1


_TRANSIENT: Final = (RedisError, OSError, TimeoutError)


@dataclass
class Summary:
    """What one reload did (tests and the log line)."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    failed: int = 0
    unchanged: int = 0
    pending: int = 0
    file_error: str = ""

    def __str__(self) -> str:
        if self.file_error:
            return f"file not applied: {self.file_error}"
        return (
            f"{self.added} added, {self.updated} updated, {self.removed} removed, "
            f"{self.failed} refused, {self.unchanged} unchanged"
            + (f", {self.pending} waiting for redis" if self.pending else "")
        )


def _transient(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, _TRANSIENT):
            return True
        current, seen = current.__cause__, seen + 1
    return False


def _field_of(kind: str, message: str) -> str:
    """The entry field a provisioner's refusal is about."""
    if kind == "fourtosix":
        return "public_key"
    if kind == "proxy" and "proxy target" in message:
        return "address"
    if kind == "subdomain" and "destination" in message:
        return "addresses"
    return "domain"


def _public(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "secret"}


class DeclaredSource:
    """Serve `path`'s entries through `provisioners` (by reservation type)."""

    def __init__(
        self,
        path: Path,
        batch: AutoPipeline,
        provisioners: Mapping[str, Provisioner],
        *,
        lock: asyncio.Lock | None = None,
        allow_private: bool = False,
        tunnel_remote: str = "",
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.batch = batch
        self.provisioners = provisioners
        """Read at each use: 4to6 joins once its interface is set up."""
        self.lock = lock or asyncio.Lock()
        self.allow_private = allow_private
        self.tunnel_remote = tunnel_remote
        self.metrics = metrics
        self.clock = clock
        self.records: dict[str, Record] = {}
        self.live: dict[str, Reservation] = {}
        """Applied entries' reservations (with secrets: memory only), by entry name."""
        self._signature: tuple[int, ...] | None = None
        self._reload = asyncio.Event()
        self._retry_at: float | None = None
        self._entries: dict[str, Entry] = {}
        """The file's valid entries as last applied, by name."""
        self.held: set[str] = set()
        """Entries refused because another owner holds their name: tried again on their own."""
        self._held_at = 0.0
        self._last_file_error = ""
        self._loaded = 0.0
        self.reloads = 0
        self.calls = 0
        """Provisioner calls made (provision + decommission), for tests and benchmarks."""

    # -- start-up ------------------------------------------------------------------------------

    async def load_records(self) -> None:
        """What a previous run applied (before the first reload)."""
        self.records = await read_all(self.batch)

    def request_reload(self) -> None:
        """SIGHUP: read the file again now."""
        self._reload.set()

    def live_of_type(self, rtype: str) -> list[Reservation]:
        return [r for r in self.live.values() if r.type == rtype]

    # -- the file -------------------------------------------------------------------------------

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    async def reload(self, reason: str = "reload") -> Summary:
        """Read the file and apply what differs from what is applied."""
        self._signature = self._stat()
        self.reloads += 1
        try:
            declared = await asyncio.to_thread(load, self.path, allow_private=self.allow_private)
        except FileError as exc:
            message = str(exc)
            if message != self._last_file_error:
                log.error(
                    "workloads file not applied (%s): %s; what was applied stays served",
                    reason,
                    message,
                )
            self._last_file_error = message
            await self._save_file_state(error=message)
            return Summary(file_error=message)
        self._last_file_error = ""
        async with self.lock:
            summary = await self._apply(declared)
        await self._save_file_state(error="")
        log.info("workloads file %s applied (%s): %s", self.path, reason, summary)
        for error in declared.errors:
            log.warning("%s", error)
        return summary

    async def _save_file_state(self, *, error: str) -> None:
        now = self.clock()
        if not error:
            self._loaded = now
        state = FileState(str(self.path), self._loaded, error, now)
        with contextlib.suppress(*_TRANSIENT):
            await self.batch.execute("SET", FILE_KEY, state.encode())

    # -- applying a difference --------------------------------------------------------------------

    async def _apply(self, declared: DeclaredFile) -> Summary:
        summary = Summary()
        desired = {e.name: e for e in declared.entries}
        refused = {e.name: e for e in declared.errors}
        self._entries = desired
        self.held &= desired.keys()
        writes: dict[str, Record | None] = {}

        # 1. Gone (or now bad, or of another kind): take down what was applied.
        removals = [
            name
            for name, rec in self.records.items()
            if rec.applied and (name not in desired or desired[name].kind != rec.kind)
        ]
        await self._run(
            sorted(removals, key=lambda n: -_RANK[self.records[n].kind]),
            lambda name: self._remove(name, writes, summary),
            key=lambda name: self.records[name].reservation(name),
        )
        for name, rec in list(self.records.items()):
            if name not in desired and name not in refused and writes.get(name, rec) is not None:
                writes[name] = None  # entry removed from the file (or never applied)
        for name, error in refused.items():
            if name in desired:
                continue
            before = writes.get(name) or self.records.get(name)
            writes[name] = Record(
                error.kind, KINDS[error.kind], "", "", ERROR, str(error), updated=self.clock()
            )
            if before is None or before.state != ERROR:
                summary.failed += 1

        # 2. New, changed, or refused before: provision (waves: zones first).
        todo = []
        for name, entry in desired.items():
            current = self.records.get(name)
            if (
                current is not None
                and current.applied
                and current.digest == entry.digest
                and current.state == OK
            ):
                summary.unchanged += 1
                continue
            todo.append(entry)
        await self._provision_all(todo, writes, summary)
        await self._persist(writes)
        self._publish()
        if summary.pending:
            self._retry_at = self.clock() + RETRY_INTERVAL
        self._held_at = self.clock() + HELD_RETRY_INTERVAL
        return summary

    async def _provision_all(
        self, entries: list[Entry], writes: dict[str, Record | None], summary: Summary
    ) -> None:
        """Provision `entries` in waves (zones first), by rank within a wave."""
        entries = sorted(entries, key=lambda e: _RANK[e.kind])
        for _, wave in itertools.groupby(entries, key=lambda e: _wave(e.type)):
            await self._run(
                list(wave),
                lambda entry: self._provision(entry, writes, summary),
                key=lambda entry: entry_reservation(
                    entry.kind, entry.name, entry.fields, entry.secret
                ),
            )

    async def retry_held(self) -> Summary:
        """Try again the entries refused because another owner held their name."""
        summary = Summary()
        async with self.lock:
            todo = [self._entries[name] for name in sorted(self.held) if name in self._entries]
            if not todo:
                return summary
            writes: dict[str, Record | None] = {}
            await self._provision_all(todo, writes, summary)
            await self._persist(writes)
            self._publish()
        if summary.added:
            log.info(
                "workloads file: %d entries refused for a name another owner held are applied",
                summary.added,
            )
        if summary.pending:
            self._retry_at = self.clock() + RETRY_INTERVAL
        return summary

    async def _run(
        self, items: list[Any], step: Callable[[Any], Any], key: Callable[[Any], Reservation]
    ) -> None:
        """Steps on items sharing a name (or a serial type) one after another, others
        concurrently (the engine's chains)."""
        if not items:
            return
        groups = [[items[i] for i in chain] for chain in chains([key(it) for it in items])]
        gate = asyncio.Semaphore(MAX_CONCURRENT)

        async def run(group: list[Any]) -> None:
            async with gate:
                for item in group:
                    await step(item)

        await asyncio.gather(*(run(g) for g in groups))

    async def _call(self, action: str, r: Reservation) -> bytes | None:
        provisioner = self.provisioners.get(r.type)
        if provisioner is None:
            if action == "decommission":
                return None
            raise ProvisionError(
                "4to6 is not enabled on this gateway (give --endpoint and --wg-iface)"
                if r.type == "gateway4to6"
                else f"type {r.type} is not supported"
            )
        self.calls += 1
        started = time.monotonic()
        outcome = "error"
        try:
            if action == "provision":
                data = await provisioner.provision(r)
            else:
                await provisioner.decommission(r)
                data = None
            outcome = "ok"
            return data
        finally:
            if self.metrics is not None:
                self.metrics.job_done(
                    r.type, action, outcome, time.monotonic() - started, source="file"
                )

    async def _remove(self, name: str, writes: dict[str, Record | None], summary: Summary) -> None:
        rec = self.records[name]
        try:
            await self._call("decommission", rec.reservation(name))
        except Exception as exc:
            if _transient(exc):
                summary.pending += 1
                return  # still applied: removed at the next try
            log.error("workloads file: removing %s %r failed: %s", rec.kind, name, exc)
        self.live.pop(name, None)
        writes[name] = replace(rec, applied=False, state=PENDING)
        summary.removed += 1

    async def _provision(
        self, entry: Entry, writes: dict[str, Record | None], summary: Summary
    ) -> None:
        name = entry.name
        old = writes.get(name, self.records.get(name))  # after a kind change: removed above
        new = entry_reservation(entry.kind, name, entry.fields, entry.secret)
        public = _public(json.loads(new.data))
        client = (
            {"remote": self.tunnel_remote, "secret_file": entry.fields["secret_file"]}
            if entry.kind == "reverse_proxy"
            else {}
        )
        try:
            data = await self._call("provision", new)
        except Exception as exc:
            if isinstance(exc, NameHeldError):
                self.held.add(name)
            else:
                self.held.discard(name)
            if _transient(exc):
                summary.pending += 1
                writes[name] = Record(
                    entry.kind,
                    new.type,
                    new.user_id,
                    "",
                    PENDING,
                    f"waiting for redis: {exc}",
                    public,
                    applied=bool(old and old.applied),
                    updated=self.clock(),
                )
                return
            message = (
                str(exc)
                if isinstance(exc, ProvisionError)
                else f"internal error: {type(exc).__name__}"
            )
            if not isinstance(exc, ProvisionError):
                log.exception("workloads file: %s %r crashed the provisioner", entry.kind, name)
            error = EntryError(
                str(self.path), entry.kind, name, _field_of(entry.kind, message), message
            )
            applied = False
            if old is not None and old.applied:
                # The file is the truth: the old version of a refused entry is not served.
                try:
                    await self._call("decommission", old.reservation(name))
                except Exception as inner:
                    applied = _transient(inner)
                    log.warning(
                        "workloads file: removing the old %s %r: %s", entry.kind, name, inner
                    )
            self.live.pop(name, None)
            writes[name] = Record(
                entry.kind,
                new.type,
                new.user_id,
                entry.digest,
                ERROR,
                str(error),
                public,
                applied=applied,
                updated=self.clock(),
            )
            if old is None or old.state != ERROR or old.digest != entry.digest:
                log.warning("%s", error)
            summary.failed += 1
            return
        self.held.discard(name)
        if old is not None and old.applied:
            await self._clean_after_update(name, old, public)
            summary.updated += 1
        else:
            summary.added += 1
        self.live[name] = new
        result = json.loads(data) if data else None
        writes[name] = Record(
            entry.kind,
            new.type,
            new.user_id,
            entry.digest,
            OK,
            "",
            public,
            applied=True,
            result=result,
            client=client,
            updated=self.clock(),
        )

    async def _clean_after_update(self, name: str, old: Record, public: Mapping[str, Any]) -> None:
        """Remove what the old version served and the new one does not."""
        if old.type != KINDS.get(old.kind) or old.data.get("domain") != public.get("domain"):
            stale = old.reservation(name)
        elif old.type == "subdomain":
            gone = [
                ip
                for ip in old.data.get("destination", [])
                if ip not in public.get("destination", [])
            ]
            if not gone:
                return
            stale = replace(old, data={**old.data, "destination": gone}).reservation(name)
        else:
            return  # same name: the new route or peer replaced the old one
        if old.type == "gateway4to6":
            return
        try:
            await self._call("decommission", stale)
        except Exception as exc:
            log.warning("workloads file: cleaning up the old %s %r: %s", old.kind, name, exc)

    async def _persist(self, writes: dict[str, Record | None]) -> None:
        """Write the changed records (one pipeline); memory follows only what was written."""
        dels = [name for name, rec in writes.items() if rec is None]
        sets = {name: rec for name, rec in writes.items() if rec is not None}
        args: list[Any] = []
        for name, rec in sets.items():
            args += [name, rec.encode()]
        try:
            await asyncio.gather(
                *([self.batch.execute("HSET", RECORDS_KEY, *args)] if args else []),
                *([self.batch.execute("HDEL", RECORDS_KEY, *dels)] if dels else []),
            )
        except _TRANSIENT as exc:
            log.warning("workloads file: cannot record what was applied: %s; again soon", exc)
            self._retry_at = self.clock() + RETRY_INTERVAL
        for name in dels:
            self.records.pop(name, None)
        self.records.update(sets)

    def _publish(self) -> None:
        if self.metrics is None:
            return
        counts: dict[tuple[str, str], int] = {}
        for rtype in KINDS.values():
            for state in (OK, ERROR, PENDING):
                counts[(rtype, state)] = 0
        for rec in self.records.values():
            counts[(rec.type, rec.state)] = counts.get((rec.type, rec.state), 0) + 1
        self.metrics.set_declared(counts)

    # -- level-triggered ------------------------------------------------------------------------

    async def reapply(self) -> int:
        """Provision every applied entry again (reconcile; redis lost data); refusals logged.
        4to6 peers are not among them: they converge with the explorer's (app.py)."""
        applied = 0
        live = sorted(
            (item for item in self.live.items() if item[1].type != "gateway4to6"),
            key=lambda item: _TYPE_RANK.get(item[1].type, 0),
        )

        async def one(item: tuple[str, Reservation]) -> None:
            nonlocal applied
            name, r = item
            provisioner = self.provisioners.get(r.type)
            if provisioner is None:
                return
            try:
                with reapplying():
                    await provisioner.provision(r)
                applied += 1
            except ProvisionError as exc:
                if _transient(exc):
                    raise RedisError(f"re-applying {name}: {exc}") from exc
                log.warning("workloads file: %r cannot be re-applied: %s", name, exc)

        async with self.lock:
            for _, wave in itertools.groupby(live, key=lambda item: _wave(item[1].type)):
                await self._run(list(wave), one, key=lambda item: item[1])
        return applied

    async def restore(self) -> int:
        """redis lost its data: write the records back, then re-apply every entry."""
        args: list[Any] = []
        for name, rec in self.records.items():
            args += [name, rec.encode()]
        if args:
            await self.batch.execute("HSET", RECORDS_KEY, *args)
        return await self.reapply()

    async def run(self) -> None:
        """Reload on SIGHUP, when the file changes, and after transient trouble."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._reload.wait()
            reason = ""
            if self._reload.is_set():
                self._reload.clear()
                reason = "SIGHUP"
            elif self._stat() != self._signature:
                reason = "file changed"
            elif self._retry_at is not None and self.clock() >= self._retry_at:
                reason = "retry"
            if not reason:
                if self.held and self.clock() >= self._held_at:
                    self._held_at = self.clock() + HELD_RETRY_INTERVAL
                    try:
                        await self.retry_held()
                    except _TRANSIENT as exc:
                        log.warning("workloads file: retry interrupted: %s; again soon", exc)
                        self._retry_at = self.clock() + RETRY_INTERVAL
                continue
            self._retry_at = None
            try:
                await self.reload(reason)
            except _TRANSIENT as exc:
                log.warning("workloads file: reload interrupted: %s; again soon", exc)
                self._retry_at = self.clock() + RETRY_INTERVAL
