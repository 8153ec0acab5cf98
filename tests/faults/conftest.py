"""Fixtures of the fault suite (issue 8): one whole gateway per test module where the data plane
must be observed from outside, and the agent as a program elsewhere.

Every fault test runs against the real components (redis-server, the agent program, the
development explorer over HTTP, coredns-tfgw, tfrouter, tftunnel) with fixed seeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.devexplorer import DevExplorerProcess
from tests.support.gateway import Gateway


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
def explorer(tmp_path: Path) -> Iterator[DevExplorerProcess]:
    """The development explorer as a separate process, for the tests of the agent alone."""
    proc = DevExplorerProcess(log_file=tmp_path / "explorer.log")
    proc.start()
    yield proc
    proc.stop()
