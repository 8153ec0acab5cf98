"""The workload counters (`directory.WorkloadAmount`, spec §7) are written down twice on
purpose: the agent sends them and the development explorer checks them, as two independent
implementations of the protocol (an import contract keeps them apart). This test is what keeps
the two lists the same: same keys, same Go field order."""

from __future__ import annotations

from tfgateway.explorer.client import COUNTER_KEYS
from tfgateway_devexplorer.store import _WORKLOAD_AMOUNT


def test_agent_and_dev_explorer_agree_on_the_workload_counters() -> None:
    assert tuple(_WORKLOAD_AMOUNT) == COUNTER_KEYS
