"""`--state FILE`: the development explorer's state survives restarts, even `kill -9`.

Two files: `FILE` holds a full snapshot (written to a temporary file and renamed, so it is never
torn) and `FILE.journal` one JSON line per change since that snapshot. A change is appended to
the journal *before* it is applied and answered, so whatever a client saw acknowledged is on
disk; appending is O(1), unlike rewriting the snapshot for every result PUT of a burst. At start
the snapshot is loaded, the journal replayed with the recorded times, and both are compacted.
No fsync: this guards against crashes of the process, not against power loss.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, TypeVar

from tfgateway_devexplorer.specs import UserSpec, WorkloadSpec
from tfgateway_devexplorer.store import ExplorerError, Store

_Spec = TypeVar("_Spec", UserSpec, WorkloadSpec)


class StateFileError(Exception):
    """The state or journal file cannot be used (message names the file and the problem)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str | bytes) -> bytes:
    """A journaled body (base64 text), or a live one (already bytes)."""
    return text if isinstance(text, bytes) else base64.b64decode(text)


def _spec(model: type[_Spec], value: Any) -> _Spec:
    """A journaled spec (a JSON object) validated, or a live one (already validated)."""
    return value if isinstance(value, model) else model.model_validate(value)


def apply_op(store: Store, entry: dict[str, Any]) -> Any:
    """Run one recorded change against the store, with the store's clock fixed to its time."""
    when = float(entry["time"])
    op = entry["op"]
    args = entry.get("args", {})
    saved_clock = store.clock
    store.clock = lambda: when
    try:
        if op == "add_user":
            return store.add_user(_spec(UserSpec, args["spec"]))
        if op == "add_workload":
            return store.add_workload(_spec(WorkloadSpec, args["spec"]))
        if op == "set_next_action":
            return store.set_next_action(int(args["id"]), int(args["next_action"]))
        if op == "register":
            return store.register_gateway(_unb64(args["body"]))
        if op == "uptime":
            return store.gateway_uptime(args["node_id"], args["key_id"], _unb64(args["body"]))
        if op == "reserved_resources":
            return store.gateway_reserved_resources(
                args["node_id"], args["key_id"], _unb64(args["body"])
            )
        if op == "put_result":
            return store.put_result(args["node_id"], args["gwid"], _unb64(args["body"]))
        if op == "put_deleted":
            return store.put_deleted(args["node_id"], args["gwid"])
        if op == "reset":
            return store.reset()
        raise ValueError(f"unknown journal operation {op!r}")
    finally:
        store.clock = saved_clock


class StateFile:
    """Snapshot + journal for one store."""

    def __init__(self, path: Path, compact_every: int = 5000) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.compact_every = compact_every
        self._journal: IO[str] | None = None
        self._entries = 0
        self._seq = 0  # sequence number of the last recorded change

    def restore(self, store: Store) -> bool:
        """Load snapshot and journal into `store`; True if there was anything to load."""
        found = False
        if self.path.exists():
            found = True
            try:
                snapshot = json.loads(self.path.read_text())
                store.restore(snapshot)
                self._seq = int(snapshot.get("journal_seq", 0))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StateFileError(f"{self.path}: not a usable state file: {exc}") from None
        if self.journal_path.exists():
            found = True
            try:
                lines = self.journal_path.read_text().splitlines()
            except OSError as exc:
                raise StateFileError(f"{self.journal_path}: cannot read: {exc}") from None
            for number, line in enumerate(lines, 1):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    if number == len(lines):
                        break  # a line torn by a crash while it was written
                    raise StateFileError(
                        f"{self.journal_path}: line {number} is not JSON"
                    ) from None
                # changes already in the snapshot (a crash between its rename and the
                # journal's removal) are skipped
                seq = int(entry.get("seq", 0)) if isinstance(entry, dict) else 0
                if seq <= self._seq:
                    continue
                self._seq = seq
                try:
                    apply_op(store, entry)
                except ExplorerError:
                    pass  # refused then too; its history entry is now back
                except (ValueError, KeyError, TypeError) as exc:
                    raise StateFileError(f"{self.journal_path}: line {number}: {exc}") from None
        return found

    def record(self, entry: dict[str, Any]) -> None:
        """Append one change (flushed to the kernel before the change is applied)."""
        if self._journal is None:
            self._journal = self.journal_path.open("a", encoding="utf-8")
        self._seq += 1
        entry = {"seq": self._seq, **entry}
        self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._journal.flush()
        self._entries += 1

    @property
    def needs_compaction(self) -> bool:
        return self._entries >= self.compact_every

    def compact(self, store: Store) -> None:
        """Write a full snapshot atomically, then start an empty journal."""
        snapshot = store.snapshot()
        snapshot["journal_seq"] = self._seq
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=".devexplorer-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.journal_path.unlink(missing_ok=True)
        self._entries = 0

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
