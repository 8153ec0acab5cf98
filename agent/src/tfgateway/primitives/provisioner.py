"""The contract between the engine and the primitives (DNS, proxy, 4to6).

A primitive turns a live reservation into data-plane state and back. Both directions are
idempotent: provisioning the same reservation again restores exactly its state, decommissioning
something already gone succeeds. Refusals are `ProvisionError`; its text becomes the `message`
of the error result sent to the explorer, so it must be clear to the user who made the
reservation and must not leak secrets. The engine marks re-applications of reservations it
accepted before (`reapplying`): a primitive may then keep a live workload but stop serving it
(a name whose proof of control lapsed) where it would refuse a new one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from tfgateway.model import fastjson
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.validation import ValidationError, normalize_domain

__all__ = [
    "NameHeldError",
    "ProvisionError",
    "Provisioner",
    "is_reapplying",
    "reapplying",
    "reservation_data",
    "reserved_domain",
]


class ProvisionError(Exception):
    """A reservation cannot be applied (or removed); `message` is for the explorer result."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NameHeldError(ProvisionError):
    """Refused because another owner holds the name (or the WireGuard key): the same
    reservation may succeed once they let go. The message is the Go daemon's, unchanged."""


@runtime_checkable
class Provisioner(Protocol):
    """What the engine calls for each reservation type."""

    async def provision(self, r: Reservation) -> bytes | None:
        """Apply `r`; return raw JSON result data (or None for `null`)."""
        ...

    async def decommission(self, r: Reservation) -> None:
        """Remove what `r` created; succeed if it is already gone."""
        ...


def reservation_data(r: Reservation, what: str) -> dict[str, Any]:
    """The reservation's data as a JSON object, or a clear refusal."""
    try:
        doc = fastjson.loads(r.data or b"null")
    except ValueError as exc:
        raise ProvisionError(f"invalid {what} data: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProvisionError(f"invalid {what} data: expected a JSON object")
    return doc


def reserved_domain(r: Reservation, what: str) -> tuple[dict[str, Any], str] | None:
    """(data, normalised `domain`) of a reservation being removed; None when its data has no
    valid name: such a reservation was refused when provisioned, so there is nothing to remove."""
    doc = reservation_data(r, what)
    try:
        return doc, normalize_domain(doc.get("domain", ""))
    except ValidationError:
        return None


_REAPPLYING: contextvars.ContextVar[bool] = contextvars.ContextVar("reapplying", default=False)


@contextlib.contextmanager
def reapplying() -> Iterator[None]:
    """Mark provisions in this context as re-applications of accepted workloads (the engine's
    reconcile): a lapsed proof then suspends the name instead of refusing the workload."""
    token = _REAPPLYING.set(True)
    try:
        yield
    finally:
        _REAPPLYING.reset(token)


def is_reapplying() -> bool:
    return _REAPPLYING.get()
