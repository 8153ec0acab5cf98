"""`--state`: snapshot + journal restore exactly, survive torn writes and never apply twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tfgateway_devexplorer.persistence import StateFile, StateFileError, apply_op, b64
from tfgateway_devexplorer.store import ExplorerError, Store

NODE = "node-p"


def changes() -> list[dict[str, Any]]:
    spec = {"type": "subdomain", "node_id": NODE, "customer_tid": 7, "domain": "a.example.com"}
    return [
        {"op": "add_user", "time": 100.0, "args": {"spec": {"pubkey": "ab"}}},
        {"op": "add_workload", "time": 101.0, "args": {"spec": spec}},
        {"op": "add_workload", "time": 102.0, "args": {"spec": {**spec, "domain": "b.example"}}},
        {"op": "put_result", "time": 103.0,
         "args": {"node_id": NODE, "gwid": "2-1", "body": b64(b'{"state":0,"message":"x"}')}},
        {"op": "put_deleted", "time": 104.0, "args": {"node_id": NODE, "gwid": "2-1"}},
        {"op": "put_result", "time": 105.0,
         "args": {"node_id": NODE, "gwid": "99-1", "body": b64(b"{}")}},  # refused: 404
        {"op": "set_next_action", "time": 106.0, "args": {"id": 3, "next_action": 4}},
    ]  # fmt: skip


def live(state: StateFile | None) -> Store:
    store = Store()
    for entry in changes():
        if state is not None:
            state.record(entry)
        if entry["args"].get("gwid") == "99-1":
            with pytest.raises(ExplorerError, match="not found"):
                apply_op(store, entry)
        else:
            apply_op(store, entry)
    return store


def test_journal_replay_reproduces_the_store(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "s.json")
    expected = live(state).snapshot()
    state.close()
    restored = Store()
    assert StateFile(tmp_path / "s.json").restore(restored)
    assert restored.snapshot() == expected
    assert restored.workloads[2].epoch == 101
    assert restored.result_puts[-1]["status"] == 404


def test_compaction_then_stale_journal_is_not_applied_twice(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "s.json")
    store = live(state)
    journal = state.journal_path.read_text()
    state.compact(store)
    assert not state.journal_path.exists()
    # crash between the snapshot rename and the journal removal: the journal is still there
    state.journal_path.write_text(journal)
    restored = Store()
    StateFile(tmp_path / "s.json").restore(restored)
    assert sorted(restored.workloads) == [2, 3]
    assert len(restored.deletes) == 1


def test_torn_last_line_is_ignored_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "s.json")
    live(state)
    state.close()
    lines = state.journal_path.read_text().splitlines()
    state.journal_path.write_text("\n".join([*lines, lines[0][:10]]) + "\n")
    restored = Store()
    StateFile(tmp_path / "s.json").restore(restored)
    assert sorted(restored.workloads) == [2, 3]
    state.journal_path.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(StateFileError, match="line 2 is not JSON"):
        StateFile(tmp_path / "s.json").restore(Store())


def test_missing_files_mean_nothing_to_restore(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "s.json").restore(Store()) is False


def test_unreadable_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps(["not", "a", "snapshot"]))
    with pytest.raises(StateFileError, match="not a usable state file"):
        StateFile(tmp_path / "s.json").restore(Store())
