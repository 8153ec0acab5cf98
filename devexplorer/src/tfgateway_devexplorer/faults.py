"""Deterministic fault injection for the development explorer (issue 8, point 1).

A `FaultPlan` says what goes wrong; the `FaultInjector` decides per request, drawing from one
`random.Random(seed)` a fixed number of values per affected request (one more when the plan uses
`slow_answer_rate`), so the same request sequence always meets the same faults. Counted faults
(`*_requests`) hit the next N affected requests; rates hit a fraction of them. Only explorer
endpoints are affected, never `/dev/`.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Endpoint = Literal["register", "uptime", "reserved_resources", "poll", "result", "delete", "user"]
ENDPOINTS: tuple[Endpoint, ...] = (
    "register",
    "uptime",
    "reserved_resources",
    "poll",
    "result",
    "delete",
    "user",
)

Rate = Field(default=0.0, ge=0.0, le=1.0)
Count = Field(default=0, ge=0)


class FaultPlan(BaseModel):
    """What goes wrong, and where. The default plan injects nothing."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    endpoints: list[Endpoint] | None = Field(
        default=None, description="endpoints affected; null = all explorer endpoints"
    )
    down: bool = Field(default=False, description="drop every connection without an answer")
    drop_requests: int = Count  # next N: connection dropped before the request is handled
    drop_after_requests: int = Count  # next N: handled (state changes), then dropped
    drop_after_rate: float = Rate
    error_status: int = Field(default=503, ge=500, le=599)
    error_requests: int = Count  # next N: 5xx, request not handled
    error_rate: float = Rate
    latency: float = Field(default=0.0, ge=0.0, le=600.0)  # seconds added before handling
    latency_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # up to this many seconds more, drawn per request (answers spread out as a real server's)
    latency_jitter: float = Field(default=0.0, ge=0.0, le=600.0)
    # next N / a fraction: handled (state changes), then the answer waits slow_answer_seconds,
    # so a client that gives up sooner believes the request failed
    slow_answer_requests: int = Count
    slow_answer_rate: float = Rate
    slow_answer_seconds: float = Field(default=30.0, gt=0.0, le=600.0)
    truncate_requests: int = Count  # next N: handled, body cut in half
    truncate_rate: float = Rate
    malformed_requests: int = Count  # next N: handled, body corrupted (invalid JSON)
    malformed_rate: float = Rate
    duplicate_rate: float = Rate  # poll answers: some items repeated
    shuffle_rate: float = Rate  # poll answers: items out of order


# Plan keys that only parametrise faults set by other keys.
_PARAMETERS = {
    "seed",
    "endpoints",
    "error_status",
    "latency_rate",
    "latency_jitter",
    "slow_answer_seconds",
}
_NO_FAULTS = FaultPlan().model_dump(exclude=_PARAMETERS)


@dataclass
class Decision:
    """The faults one request meets."""

    drop_before: bool = False
    drop_after: bool = False
    error_status: int | None = None
    latency: float = 0.0
    slow_answer: float = 0.0  # seconds the answer waits once the request was handled
    truncate: bool = False
    malformed: bool = False
    duplicate_seed: int | None = None
    shuffle_seed: int | None = None

    @property
    def any(self) -> bool:
        return self != Decision()


NO_FAULTS = Decision()


class FaultInjector:
    """Holds the current plan and its remaining counts; decides per request."""

    def __init__(self) -> None:
        self.plan = FaultPlan()
        self._remaining: dict[str, int] = {}
        self._rng = random.Random(0)
        self._inert = True
        self.applied: Counter[str] = Counter()

    def set_plan(self, plan: FaultPlan) -> None:
        self.plan = plan
        # A plan that sets no fault decides nothing whatever it draws, and a new plan reseeds
        # the generator: such a plan skips the draws (every request of a normal run).
        self._inert = plan.model_dump(exclude=_PARAMETERS) == _NO_FAULTS
        self._rng = random.Random(plan.seed)
        self._remaining = {
            "drop": plan.drop_requests,
            "drop_after": plan.drop_after_requests,
            "error": plan.error_requests,
            "truncate": plan.truncate_requests,
            "malformed": plan.malformed_requests,
            "slow_answer": plan.slow_answer_requests,
        }

    def clear(self) -> None:
        self.set_plan(FaultPlan())

    def status(self) -> dict[str, Any]:
        return {
            "plan": self.plan.model_dump(),
            "remaining": dict(self._remaining),
            "applied": dict(self.applied),
        }

    def _take(self, name: str) -> bool:
        if self._remaining.get(name, 0) > 0:
            self._remaining[name] -= 1
            return True
        return False

    def decide(self, endpoint: Endpoint) -> Decision:
        """The faults of one request (`NO_FAULTS`, shared and never changed, for none)."""
        if self._inert:
            return NO_FAULTS
        plan = self.plan
        if plan.endpoints is not None and endpoint not in plan.endpoints:
            return NO_FAULTS
        draws = [self._rng.random() for _ in range(7)]
        sub_seeds = (self._rng.getrandbits(64), self._rng.getrandbits(64))
        # drawn only by plans that use it, so older plans keep their exact sequences
        slow_draw = self._rng.random() if plan.slow_answer_rate > 0 else 1.0
        jitter = self._rng.random() * plan.latency_jitter if plan.latency_jitter > 0 else 0.0
        decision = Decision()
        if plan.down or self._take("drop"):
            decision.drop_before = True
        elif self._take("error") or draws[0] < plan.error_rate:
            decision.error_status = plan.error_status
        else:
            if self._take("truncate") or draws[1] < plan.truncate_rate:
                decision.truncate = True
            elif self._take("malformed") or draws[2] < plan.malformed_rate:
                decision.malformed = True
            elif self._take("drop_after") or draws[3] < plan.drop_after_rate:
                decision.drop_after = True
            if endpoint == "poll":
                if draws[4] < plan.duplicate_rate:
                    decision.duplicate_seed = sub_seeds[0]
                if draws[5] < plan.shuffle_rate:
                    decision.shuffle_seed = sub_seeds[1]
            if self._take("slow_answer") or slow_draw < plan.slow_answer_rate:
                decision.slow_answer = plan.slow_answer_seconds
        if plan.latency > 0 and (plan.latency_rate >= 1.0 or draws[6] < plan.latency_rate):
            decision.latency = plan.latency + jitter
        for name, hit in (
            ("drop", decision.drop_before),
            ("drop_after", decision.drop_after),
            ("error", decision.error_status is not None),
            ("latency", decision.latency > 0),
            ("slow_answer", decision.slow_answer > 0),
            ("truncate", decision.truncate),
            ("malformed", decision.malformed),
            ("duplicate", decision.duplicate_seed is not None),
            ("shuffle", decision.shuffle_seed is not None),
        ):
            if hit:
                self.applied[name] += 1
        return decision


def mangle_items(items: list[Any], decision: Decision) -> list[Any]:
    """Apply duplicate / out-of-order faults to a poll answer's items."""
    out = list(items)
    if decision.duplicate_seed is not None and out:
        rng = random.Random(decision.duplicate_seed)
        for _ in range(rng.randint(1, len(out))):
            out.insert(rng.randint(0, len(out)), rng.choice(items))
    if decision.shuffle_seed is not None:
        random.Random(decision.shuffle_seed).shuffle(out)
    return out


def truncate_body(body: bytes) -> bytes:
    """Cut a body in half: a complete HTTP answer whose JSON ends too early."""
    return body[: max(1, len(body) // 2)] if len(body) > 1 else b""


def corrupt_body(body: bytes) -> bytes:
    """Break the JSON syntax in the middle of the body."""
    middle = len(body) // 2
    return body[:middle] + b"\x00}{" + body[middle:]
