"""Explorer workload → the Go daemon's `provision.Reservation` (explorer spec §5), and back to
the wire `workloads.Result` (§7).

Deliberate difference (spec F5): with a `reference`, the Go daemon replaced the ID and sent the
result and DELETE for the *old* ID. Here the reference stays the cache key (so a cache written
by the Go daemon keeps working) but feedback goes to the workload's own ID, the one the explorer
is waiting for (`Job.real_id`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final

from tfgateway.explorer.models import (
    NEXT_ACTION_DELETE,
    TYPE_CODES,
    WORKLOAD_TYPES,
    DelegateWorkload,
    Gateway4To6Workload,
    ProxyWorkload,
    ReverseProxyWorkload,
    SubdomainWorkload,
    WireResult,
    Workload,
    WorkloadError,
    parse_workload,
)
from tfgateway.model import gojson
from tfgateway.model.reservation import MAX_DURATION_NS, GoTime, Reservation, Result

__all__ = [
    "TYPE_RANK",
    "Job",
    "go_ip_string",
    "job_from_item",
    "rank",
    "reservation_data",
    "to_reservation",
    "wire_result",
]

# Provision order within one poll (GW `ProvisionOrder`); unknown types rank 0.
TYPE_RANK: Final[dict[str, int]] = {
    "domain_delegate": 0,
    "subdomain": 1,
    "proxy": 2,
    "reverse_proxy": 3,
    "gateway4to6": 4,
}
_REFERENCE: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_MIN_EPOCH, _MAX_EPOCH = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of engine work from a poll item."""

    reservation: Reservation
    real_id: str
    """`<id>-<workload_id>`: where results and DELETEs go."""
    category: int
    """The workload_type code, echoed as the result's `category`."""
    explorer_result: WireResult
    """The explorer's copy of our last result (tells whether a PUT was acknowledged)."""

    @property
    def key(self) -> str:
        """Cache key: the reference when set, else the real ID (as the Go daemon)."""
        return self.reservation.id


def rank(job: Job) -> int:
    return TYPE_RANK.get(job.reservation.type, 0)


@functools.lru_cache(maxsize=4096)  # the same few addresses come back in thousands of workloads
def go_ip_string(text: str) -> str:
    """Go `net.ParseIP(text).String()`: canonical text, IPv4-mapped shown as IPv4, "" if invalid."""
    if "%" in text or not text or len(text) > 64:
        return ""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


def reservation_data(w: Workload) -> bytes:
    """The gateway's own per-type struct, compact, in its key order (empty for other types)."""
    value: dict[str, Any]
    string = gojson.string
    # The two types of a burst written field by field: the bytes `gojson.marshal` gives for
    # the dictionaries below (tests/unit/explorer/test_workloads.py holds them equal).
    if type(w) is ProxyWorkload:
        text = (
            f'{{"domain":{string(w.domain)},"addr":{string(w.addr)},'
            f'"port":{int.__repr__(w.port)},"port_tls":{int.__repr__(w.port_tls)}}}'
        )
        return text.encode("utf-8", "surrogateescape")
    if type(w) is SubdomainWorkload:
        ips = ",".join([string(go_ip_string(ip)) for ip in w.ips])
        text = f'{{"domain":{string(w.domain)},"destination":[{ips}]}}'
        return text.encode("utf-8", "surrogateescape")
    if isinstance(w, ProxyWorkload):
        value = {"domain": w.domain, "addr": w.addr, "port": w.port, "port_tls": w.port_tls}
    elif isinstance(w, ReverseProxyWorkload):
        value = {"domain": w.domain, "secret": w.secret}
    elif isinstance(w, SubdomainWorkload):
        value = {"domain": w.domain, "destination": [go_ip_string(ip) for ip in w.ips]}
    elif isinstance(w, DelegateWorkload):
        value = {"domain": w.domain}
    elif isinstance(w, Gateway4To6Workload):
        value = {"public_key": w.public_key}
    else:
        return b""
    return gojson.marshal(value)


def _time(seconds: int, what: str, real_id: str, category: int) -> GoTime:
    if not _MIN_EPOCH <= seconds <= _MAX_EPOCH:
        raise WorkloadError(
            f"malformed workload: {what} {seconds} is out of range",
            real_id=real_id,
            category=category,
        )
    return GoTime.from_unix(seconds)


def _explorer_result(r: WireResult, real_id: str, category: int) -> Result:
    data = b"" if r.data_json is None else gojson.marshal(r.data_json)
    return Result(
        type=WORKLOAD_TYPES.get(r.category, "UNKNOWN"),
        id=r.workload_id,
        created=_time(r.epoch, "result epoch", real_id, category),
        state=r.state,
        message=r.message,
        data_json=data,
        signature=r.signature,
    )


def to_reservation(w: Workload) -> Reservation:
    """Spec §5 conversion; WorkloadError when a field makes the workload unusable."""
    real_id, category = w.real_id, w.workload_type
    if w.reference and not _REFERENCE.fullmatch(w.reference):
        raise WorkloadError(
            f"invalid reference {w.reference[:64]!r}: must be '<id>-<workload_id>'",
            real_id=real_id,
            category=category,
            user=str(w.customer_tid),
        )
    if w.customer_tid <= 0:
        # User 0 is the operator (the workloads file, docs/workloads.md): an explorer workload
        # must never share its names.
        raise WorkloadError(
            f"invalid customer_tid {w.customer_tid}: must be a positive user id",
            real_id=real_id,
            category=category,
            user=str(w.customer_tid),
        )
    name = w.type_name
    return Reservation(
        id=w.reference or real_id,
        node_id=w.node_id if name in TYPE_RANK else "",
        user_id=str(w.customer_tid),
        type=name,
        data=reservation_data(w),
        created=_time(w.epoch, "epoch", real_id, category),
        duration=MAX_DURATION_NS,
        signature=w.customer_signature.encode("utf-8"),
        to_delete=w.next_action == NEXT_ACTION_DELETE,
        reference=w.reference,
        result=_explorer_result(w.result, real_id, category),
        version=w.version,
    )


def job_from_item(item: Any) -> Job:
    """Poll item → Job; WorkloadError (with where to answer, if known) otherwise."""
    w = parse_workload(item)
    r = to_reservation(w)
    return Job(reservation=r, real_id=w.real_id, category=w.workload_type, explorer_result=w.result)


def wire_result(result: Result, category: int | None = None) -> bytes:
    """`workloads.Result` as the PUT body: Go `json.Encoder` bytes, keys in Go order (§7).
    Written field by field: the bytes `gojson.encode` gives for the same dictionary (a
    property test holds them equal), without building it for every result."""
    code = TYPE_CODES.get(result.type, 0) if category is None else category
    created = result.created
    epoch = int(created.timestamp()) if created.year > 1 else 0
    string = gojson.string
    text = "".join(
        (
            '{"category":',
            int.__repr__(code),
            ',"workload_id":',
            string(result.id),
            ',"data_json":',
            gojson.raw_text(result.data_json),
            ',"signature":',
            string(result.signature),
            ',"state":',
            int.__repr__(int(result.state)),
            ',"message":',
            string(result.message),
            ',"epoch":',
            int.__repr__(epoch),
            ',"node_id":""}\n',
        )
    )
    return text.encode("utf-8", "surrogateescape")
