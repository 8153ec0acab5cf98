"""`tfgateway status`: what this gateway serves, read from redis (no explorer needed).

One row per cached reservation (type, id, domain, owner, state, age), every entry of the
operator's workloads file with its state and what its client needs (`declared.results`), the
names whose proof of control is missing (suspended: not served, and why; grandfathered: when
they are first checked) and the delivery backlog of the outbox (results, deletes and stats the
explorer has not acknowledged yet).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import redis.asyncio as aioredis

from tfgateway.declared.results import Declared
from tfgateway.declared.results import collect as collect_declared
from tfgateway.declared.results import render as render_declared
from tfgateway.engine.cache import ReservationCache
from tfgateway.engine.outbox import OUTBOX_KEY, STATS_FIELD, Message
from tfgateway.model.reservation import Reservation, ResultState
from tfgateway.primitives.name_proofs import ProofRecord, ProofState, read_records

__all__ = ["Row", "Status", "collect", "format_age", "render_table"]


@dataclass(frozen=True)
class Row:
    type: str
    id: str
    domain: str
    owner: str
    state: str
    age: float


@dataclass(frozen=True)
class NameProof:
    kind: str
    name: str
    record: ProofRecord


@dataclass(frozen=True)
class Status:
    rows: list[Row]
    undecodable: list[str]
    backlog: list[Message]
    stats_pending: bool
    proofs: list[NameProof]
    declared: Declared | None = None
    """The operator's workloads file (`--workloads`): each entry's state and client needs."""
    tunnel_pin: str | None = None
    """The router's key for authenticated tunnels (`tftunnel --pin`), None when it has none."""

    def to_json(self) -> dict[str, Any]:
        return {
            "tunnel_pin": self.tunnel_pin,
            "workloads": [r.__dict__ for r in self.rows],
            "declared": None if self.declared is None else self.declared.to_json(),
            "name_proofs": [
                {"kind": p.kind, "name": p.name, **p.record.__dict__} for p in self.proofs
            ],
            "undecodable": self.undecodable,
            "backlog": [{"op": m.op, "id": m.gwid, "queued": m.queued} for m in self.backlog],
            "stats_pending": self.stats_pending,
        }


def _domain(r: Reservation) -> str:
    try:
        data = json.loads(r.data) if r.data else {}
    except ValueError:
        return "?"
    if not isinstance(data, dict):
        return "?"
    value = data.get("domain") or data.get("public_key") or ""
    return str(value)


def _state(r: Reservation) -> str:
    try:
        return ResultState(int(r.result.state)).name.lower()
    except ValueError:
        return str(r.result.state)


def _age(r: Reservation, now: float) -> float:
    created = r.result.created if r.result.created.year > 1 else r.created
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return max(0.0, now - created.timestamp())


# Where tfrouter publishes the pin of its tunnel key at start (dataplane/router, PinKey).
TUNNEL_PIN_KEY = "tfgateway:router:tunnel-pin"


async def collect(redis: aioredis.Redis) -> Status:
    reservations, bad = await ReservationCache(redis).list()
    now = time.time()
    rows = sorted(
        (Row(r.type, r.id, _domain(r), r.user_id, _state(r), _age(r, now)) for r in reservations),
        key=lambda row: (row.type, row.domain, row.id),
    )
    backlog: list[Message] = []
    stats_pending = False
    raw = await redis.hgetall(OUTBOX_KEY)
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name == STATS_FIELD:
            stats_pending = True
            continue
        try:
            data = value if isinstance(value, bytes) else value.encode()
            backlog.append(Message.from_json(int(name), data))
        except (ValueError, TypeError, KeyError):
            continue
    backlog.sort(key=lambda m: m.seq)
    proofs = [NameProof(kind, name, record) for kind, name, record in await read_records(redis)]
    raw_pin = await redis.get(TUNNEL_PIN_KEY)
    pin = raw_pin.decode() if isinstance(raw_pin, bytes) else raw_pin
    declared = await collect_declared(redis)
    return Status(rows, bad, backlog, stats_pending, proofs, declared, pin)


def format_age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def render_table(status: Status, now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = ("TYPE", "ID", "DOMAIN", "OWNER", "STATE", "AGE")
    rows = [(r.type, r.id, r.domain, r.owner, r.state, format_age(r.age)) for r in status.rows]
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(header)
    ]
    lines = [
        "  ".join(col.ljust(w) for col, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    lines.append(f"{len(status.rows)} workloads served")
    if status.tunnel_pin:
        lines.append(f"tunnel clients: tftunnel --pin {status.tunnel_pin}")
    else:
        lines.append("tunnel clients: the router publishes no pin (no tunnel key, or not started)")
    if status.declared is not None:
        lines += render_declared(status.declared, status.tunnel_pin)
    lines += _proof_lines(status.proofs, now)
    if status.undecodable:
        lines.append(
            f"{len(status.undecodable)} undecodable cache entries: "
            + ", ".join(status.undecodable[:10])
        )
    if status.backlog or status.stats_pending:
        oldest = min((m.queued for m in status.backlog), default=now)
        lines.append(
            f"delivery backlog: {sum(m.op == 'result' for m in status.backlog)} results, "
            f"{sum(m.op == 'delete' for m in status.backlog)} deletes"
            + (", stats" if status.stats_pending else "")
            + (f" (oldest {format_age(now - oldest)} old)" if status.backlog else "")
        )
        for m in status.backlog[:20]:
            lines.append(f"  {m.op:<6} {m.gwid}  queued {format_age(now - m.queued)} ago")
    else:
        lines.append("delivery backlog: empty (the explorer acknowledged everything)")
    return "\n".join(lines)


def _proof_lines(proofs: list[NameProof], now: float) -> list[str]:
    """Names outside the managed domains: counts, then every one not served or not proven."""
    if not proofs:
        return []
    counts = {state: sum(p.record.state is state for p in proofs) for state in ProofState}
    lines = [
        "names outside the managed domains: "
        + ", ".join(f"{n} {state.value}" for state, n in counts.items())
    ]
    for p in proofs:
        r = p.record
        if r.state is ProofState.SUSPENDED:
            lines.append(
                f"  SUSPENDED (not served) {p.kind} {p.name} of user {r.user}, for "
                f"{format_age(now - r.since)}: {r.reason}"
            )
        elif r.state is ProofState.GRANDFATHERED:
            lines.append(
                f"  grandfathered {p.kind} {p.name} of user {r.user}: no proof yet, first "
                f"check in {format_age(max(0.0, r.due - now))}"
            )
    return lines
