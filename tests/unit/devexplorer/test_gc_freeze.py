"""The program's explorer keeps what its store holds out of the cyclic collector's sight
(`gc.freeze` after each change), and still frees cyclic garbage by a full collection every
`_COLLECT_EVERY` changes."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Iterator

import pytest

from tfgateway_devexplorer import server
from tfgateway_devexplorer.http11 import Answer, Request
from tfgateway_devexplorer.server import DevExplorer

PUBKEY = "48075a597e721a156e2e0799de5cc0c5324dc6e7eaf1cdd46250868ec53215dd"


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process itself must not stay frozen


def add_user(explorer: DevExplorer) -> None:
    body = json.dumps({"pubkey": PUBKEY}).encode()
    answer = explorer.respond(Request("POST", "/dev/users", [], body, "1.1", True, None))
    assert isinstance(answer, Answer)
    assert answer.status == 201


class Cycle:
    me: Cycle | None = None


def test_changes_freeze_the_heap_and_cycles_are_still_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "_COLLECT_EVERY", 3)
    gc.unfreeze()
    explorer = DevExplorer(freeze_gc=True)
    add_user(explorer)
    assert gc.get_freeze_count() > 0
    cycle = Cycle()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    gc.freeze()
    del cycle
    gc.collect()
    assert gone() is not None  # frozen: no collection sees it
    add_user(explorer)
    add_user(explorer)  # the third change since the count began: unfreeze, collect
    assert gone() is None


def test_an_explorer_in_process_leaves_the_collector_alone() -> None:
    gc.unfreeze()
    add_user(DevExplorer())
    assert gc.get_freeze_count() == 0
