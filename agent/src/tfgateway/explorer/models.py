"""Explorer payloads as pydantic v2 models (explorer spec §3, §4, §7).

Anyone who can pay for a reservation chooses most of a workload's fields, so each poll item is
validated on its own: a malformed item becomes a `WorkloadError` (answered with an error result
by the engine) and never fails the whole batch, unlike the Go decoder. Types are strict like Go's
decoder (a string is not an int, 256 is not a uint8); JSON `null` leaves a field at its zero value
as Go does; unknown keys are ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

__all__ = [
    "GATEWAY_TYPES",
    "NEXT_ACTION_DELETE",
    "TYPE_CODES",
    "WORKLOAD_TYPES",
    "DelegateWorkload",
    "Gateway4To6Workload",
    "ProxyWorkload",
    "ReverseProxyWorkload",
    "SubdomainWorkload",
    "User",
    "WireResult",
    "Workload",
    "WorkloadBase",
    "WorkloadError",
    "parse_workload",
    "scrub",
]

# workload_type enum (explorer spec §4.1); the gateway serves only 5..9.
WORKLOAD_TYPES: Final[dict[int, str]] = {
    0: "zdb",
    1: "container",
    2: "volume",
    3: "network",
    4: "kubernetes",
    5: "proxy",
    6: "reverse_proxy",
    7: "subdomain",
    8: "domain_delegate",
    9: "gateway4to6",
    10: "network_resource",
    11: "public_ip",
}
TYPE_CODES: Final[dict[str, int]] = {name: code for code, name in WORKLOAD_TYPES.items()}
GATEWAY_TYPES: Final[frozenset[str]] = frozenset(
    {"proxy", "reverse_proxy", "subdomain", "domain_delegate", "gateway4to6"}
)
NEXT_ACTION_DELETE: Final = 4

_INT64 = 2**63
Int64 = Annotated[int, Field(strict=True, ge=-_INT64, le=_INT64 - 1)]
UInt8 = Annotated[int, Field(strict=True, ge=0, le=0xFF)]
UInt32 = Annotated[int, Field(strict=True, ge=0, le=0xFFFFFFFF)]


def _date(value: Any) -> Any:
    """schema.Date: Unix seconds; `""` is the zero time (other string forms are not used)."""
    if value == "":
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Date = Annotated[Int64, BeforeValidator(_date)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class WireResult(_Model):
    """`workloads.Result` as carried in a polled workload (its `data_json` kept as parsed)."""

    category: UInt8 = 0
    workload_id: str = ""
    data_json: Any = None
    signature: str = ""
    state: UInt8 = 0
    message: str = ""
    epoch: Date = 0
    node_id: str = ""


class WorkloadBase(_Model):
    """`ReservationInfo`: the fields every workload carries (the ones the gateway uses)."""

    workload_id: Int64 = 0
    node_id: str = ""
    pool_id: Int64 = 0
    reference: str = ""
    description: str = ""
    id: Int64 = 0
    customer_tid: Int64 = 0
    customer_signature: str = ""
    next_action: UInt8 = 0
    epoch: Date = 0
    metadata: str = ""
    result: WireResult = WireResult()
    workload_type: UInt8 = 0
    version: Int64 = 0

    @property
    def type_name(self) -> str:
        return WORKLOAD_TYPES.get(self.workload_type, "UNKNOWN")

    @property
    def real_id(self) -> str:
        """`<id>-<workload_id>`: the ID the explorer knows this workload by."""
        return f"{self.id}-{self.workload_id}"


class ProxyWorkload(WorkloadBase):
    domain: str = ""
    addr: str = ""
    port: UInt32 = 0
    port_tls: UInt32 = 0


class ReverseProxyWorkload(WorkloadBase):
    domain: str = ""
    secret: str = ""


class SubdomainWorkload(WorkloadBase):
    domain: str = ""
    ips: list[str] = Field(default_factory=list)


class DelegateWorkload(WorkloadBase):
    domain: str = ""


class Gateway4To6Workload(WorkloadBase):
    public_key: str = ""


Workload = (
    ProxyWorkload
    | ReverseProxyWorkload
    | SubdomainWorkload
    | DelegateWorkload
    | Gateway4To6Workload
    | WorkloadBase
)

_MODELS: Final[dict[int, type[WorkloadBase]]] = {
    5: ProxyWorkload,
    6: ReverseProxyWorkload,
    7: SubdomainWorkload,
    8: DelegateWorkload,
    9: Gateway4To6Workload,
}


class WorkloadError(Exception):
    """A poll item that cannot be served; `real_id`/`category` say where to send the error result.

    `real_id` is None when the item does not even carry usable `id`/`workload_id` (then no
    result can be addressed and the item is only logged).
    """

    def __init__(self, message: str, *, real_id: str | None, category: int, user: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.real_id = real_id
        self.category = category
        self.user = user


class User(_Model):
    """phonebook.User (GET /users/{tid}); only `pubkey` is used."""

    id: Int64 = 0
    name: str = ""
    email: str = ""
    pubkey: str = ""
    host: str = ""
    description: str = ""


_SURROGATES = re.compile("[\ud800-\udfff]")


_SCALARS: Final = frozenset({int, float, bool})
"""Types `scrub` returns as they are without a call (a poll page holds thousands)."""


def _text(value: str) -> str:
    if value.isascii():  # a flag of the string in CPython: no scan, and nearly every string
        return value
    return _SURROGATES.sub("\ufffd", value) if _SURROGATES.search(value) else value


def scrub(value: Any) -> Any:
    """Drop `null` members (Go leaves the field at its zero value) and replace lone UTF-16
    surrogates (which `json` lets through from `\\ud800` escapes) with U+FFFD as Go does."""
    if isinstance(value, str):
        return _text(value)
    # ASCII strings (nearly all) and numbers are kept without a call: a poll page holds
    # thousands of them, and two calls per string cost more than the rest of the walk.
    if isinstance(value, dict):
        return {
            (k if k.isascii() else _text(k)) if type(k) is str else scrub(k): (
                v if (t := type(v)) in _SCALARS or (t is str and v.isascii()) else scrub(v)
            )
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list):
        return [
            v if (t := type(v)) in _SCALARS or (t is str and v.isascii()) else scrub(v)
            for v in value
        ]
    return value


def _int_field(item: dict[str, Any], key: str) -> int | None:
    v = item.get(key, 0)
    if isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v < _INT64:
        return v
    return None


def item_real_id(item: Any) -> str | None:
    """`<id>-<workload_id>` of a raw poll item, without parsing the rest; None if absent."""
    if not isinstance(item, dict):
        return None
    wid, sub = _int_field(item, "id"), _int_field(item, "workload_id")
    return f"{wid}-{sub}" if wid is not None and sub is not None else None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "workload"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_workload(item: Any) -> Workload:
    """One poll item → its typed model; `WorkloadError` with a clear message otherwise."""
    if not isinstance(item, dict):
        raise WorkloadError(
            f"workload is a JSON {type(item).__name__}, not an object", real_id=None, category=0
        )
    item = scrub(item)
    real_id = item_real_id(item)
    raw_type = item.get("workload_type", 0)
    category = raw_type if isinstance(raw_type, int) and 0 <= raw_type <= 0xFF else 0
    tid = _int_field(item, "customer_tid")
    user = str(tid) if tid is not None else ""
    if real_id is None:
        raise WorkloadError(
            "workload has no integer 'id' and 'workload_id'", real_id=None, category=category
        )
    model = _MODELS.get(raw_type) if isinstance(raw_type, int) else None
    try:
        return (model or WorkloadBase).model_validate(item)
    except ValidationError as exc:
        raise WorkloadError(
            f"malformed workload: {_describe(exc)}", real_id=real_id, category=category, user=user
        ) from None
