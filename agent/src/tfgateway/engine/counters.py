"""Workload counters the explorer shows per gateway (explorer spec §3.3).

In memory and rebuilt from the cache at start, as the Go daemon does; only the four counters it
reports exist (gateway4to6 workloads are not counted upstream, and the explorer has no key for
them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from tfgateway.model.reservation import Reservation

__all__ = ["COUNTED", "Counters"]

# reservation type -> WorkloadAmount key
COUNTED: Final[dict[str, str]] = {
    "proxy": "proxy",
    "reverse_proxy": "reverse_proxy",
    "subdomain": "subdomain",
    "domain_delegate": "delegate_domain",
}


class Counters:
    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(COUNTED.values(), 0)

    @classmethod
    def from_reservations(cls, reservations: Iterable[Reservation]) -> Counters:
        counters = cls()
        for r in reservations:
            counters.increment(r.type)
        return counters

    def increment(self, rtype: str) -> None:
        key = COUNTED.get(rtype)
        if key is not None:
            self._counts[key] += 1

    def decrement(self, rtype: str) -> None:
        key = COUNTED.get(rtype)
        if key is not None and self._counts[key] > 0:
            self._counts[key] -= 1

    def as_dict(self) -> dict[str, int]:
        return dict(self._counts)
