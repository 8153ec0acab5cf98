"""The kernel suite runs only inside the QEMU guest (scripts/kernel.sh test), in namespace "gw".

Anywhere else it fails loudly instead of skipping: a green run must mean the real kernel's
WireGuard was exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="session", autouse=True)
def in_guest() -> None:
    if os.environ.get("TFGW_KERNEL_GUEST") != "1":
        pytest.fail("tests/kernel runs only inside the QEMU guest: use scripts/kernel.sh test")
    if not Path("/sys/module/wireguard").exists():
        pytest.fail("the guest kernel has no WireGuard module loaded (modprobe wireguard failed)")
    own = Path("/proc/self/ns/net").stat().st_ino
    gw = Path("/run/netns/gw")
    if not gw.exists() or gw.stat().st_ino != own:
        pytest.fail("the kernel suite must run inside network namespace gw (ip netns exec gw)")
