"""Fixtures of the fault suite (issue 8): one whole gateway per test module where the data plane
must be observed from outside, and the agent as a program elsewhere.

Every fault test runs against the real components (redis-server, the agent program, the
development explorer over HTTP, coredns-tfgw, tfrouter, tftunnel) with fixed seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.devexplorer import DevExplorerProcess
from tests.support.gateway import Gateway

_counter = itertools.count(1)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """redis, CoreDNS (gatewaydns), tfrouter, backend site, dev explorer and agent in netns."""
    with Gateway(
        tmp_path_factory.mktemp("gateway"),
        poll_interval=0.1,
        # Short retries, reconciles and replays keep the suite fast; the behaviour is the same.
        # The replay matters: a result re-sent after the user's delete pops the explorer's
        # queue entry of that delete (see the H9 report), and only a replay finds it again.
        agent_extra_args=(
            "--max-backoff",
            "1",
            "--reconcile-interval",
            "1",
            "--replay-interval",
            "3",
        ),
    ) as gw:
        yield gw


@pytest.fixture
def label(request: pytest.FixtureRequest) -> str:
    """A DNS label unique to this test, so tests sharing a gateway never share names."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-").lower()
    return f"{name.removeprefix('test-')[:40]}-{next(_counter)}"


@pytest.fixture
def explorer(tmp_path: Path) -> Iterator[DevExplorerProcess]:
    """The development explorer as a separate process, for the tests of the agent alone."""
    proc = DevExplorerProcess(log_file=tmp_path / "explorer.log")
    proc.start()
    yield proc
    proc.stop()
