"""Fault injection is deterministic for a seed and does what each knob says."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tfgateway_devexplorer.faults import (
    ENDPOINTS,
    Decision,
    FaultInjector,
    FaultPlan,
    corrupt_body,
    mangle_items,
    truncate_body,
)


def decisions(plan: FaultPlan, n: int = 200) -> list[Decision]:
    injector = FaultInjector()
    injector.set_plan(plan)
    return [injector.decide(ENDPOINTS[i % len(ENDPOINTS)]) for i in range(n)]


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    plan = FaultPlan(
        seed=7, error_rate=0.3, truncate_rate=0.2, duplicate_rate=0.5, shuffle_rate=0.5
    )
    assert decisions(plan) == decisions(plan)
    assert decisions(plan) != decisions(plan.model_copy(update={"seed": 8}))


def test_rates_are_roughly_respected() -> None:
    hits = sum(
        d.error_status == 502 for d in decisions(FaultPlan(error_rate=0.25, error_status=502), 2000)
    )
    assert 400 < hits < 600


def test_counted_faults_hit_exactly_the_next_n_requests() -> None:
    out = decisions(FaultPlan(error_requests=3, endpoints=["poll"]), 10)
    polls = [d for i, d in enumerate(out) if ENDPOINTS[i % len(ENDPOINTS)] == "poll"]
    assert all(d.error_status == 503 for d in polls[:3])
    assert all(not d.any for d in polls[3:])
    others = [d for i, d in enumerate(out) if ENDPOINTS[i % len(ENDPOINTS)] != "poll"]
    assert not any(d.any for d in others)


def test_latency_jitter_spreads_latencies_and_leaves_other_draws_alone() -> None:
    fixed = FaultPlan(seed=3, latency=0.05, error_rate=0.3)
    jittered = fixed.model_copy(update={"latency_jitter": 0.4})
    latencies = [d.latency for d in decisions(jittered, 400) if d.error_status is None]
    assert all(0.05 <= x <= 0.45 for x in latencies)
    assert max(latencies) - min(latencies) > 0.3  # spread over the range, not one value
    assert len(set(latencies)) > len(latencies) // 2
    # a plan without jitter draws as before (older plans keep their exact sequences)
    assert all(d.latency == 0.05 for d in decisions(fixed, 50) if d.error_status is None)
    with pytest.raises(ValidationError):
        FaultPlan(latency_jitter=-1)
    # jitter only parametrises latency: alone it injects nothing
    assert not any(d.any for d in decisions(FaultPlan(latency_jitter=0.4), 20))


def test_down_drops_everything_and_default_plan_does_nothing() -> None:
    assert all(d.drop_before for d in decisions(FaultPlan(down=True), 20))
    assert not any(d.any for d in decisions(FaultPlan(), 50))


def test_duplicates_and_shuffles_only_on_polls() -> None:
    out = decisions(FaultPlan(duplicate_rate=1.0, shuffle_rate=1.0), len(ENDPOINTS))
    for endpoint, decision in zip(ENDPOINTS, out, strict=True):
        assert (decision.duplicate_seed is not None) == (endpoint == "poll")


def test_mangle_items_keeps_every_item_and_is_deterministic() -> None:
    items = list(range(10))
    decision = Decision(duplicate_seed=1, shuffle_seed=2)
    mangled = mangle_items(items, decision)
    assert mangled == mangle_items(items, decision)
    assert set(mangled) == set(items)
    assert len(mangled) > len(items)
    assert mangled != sorted(mangled)


def test_body_corruptions_are_not_json() -> None:
    body = b'[{"id":1,"x":"y"}]\n'
    for broken in (truncate_body(body), corrupt_body(body), truncate_body(b"null\n")):
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken)


def test_plan_validation() -> None:
    with pytest.raises(ValidationError):
        FaultPlan.model_validate({"error_status": 404})
    with pytest.raises(ValidationError):
        FaultPlan.model_validate({"error_rate": 2})
    with pytest.raises(ValidationError):
        FaultPlan.model_validate({"endpoints": ["nope"]})


def test_slow_answer_counted_only_on_handled_requests() -> None:
    """A slow answer follows handling: a request refused with an injected 5xx does not use
    up the count, the next handled one does."""
    plan = FaultPlan(
        endpoints=["result"], error_requests=1, slow_answer_requests=2, slow_answer_seconds=20
    )
    injector = FaultInjector()
    injector.set_plan(plan)
    out = [injector.decide("result") for _ in range(5)]
    assert [d.error_status for d in out] == [503, None, None, None, None]
    assert [d.slow_answer for d in out] == [0, 20, 20, 0, 0]
    assert not injector.decide("poll").any
    assert injector.status()["applied"] == {"error": 1, "slow_answer": 2}
    assert injector.status()["remaining"]["slow_answer"] == 0


def test_slow_answer_rate_and_older_plans_keep_their_sequences() -> None:
    everything = decisions(FaultPlan(slow_answer_rate=1.0, slow_answer_seconds=3), 20)
    assert all(d.slow_answer == 3 for d in everything)
    some = [d.slow_answer > 0 for d in decisions(FaultPlan(seed=3, slow_answer_rate=0.5), 400)]
    assert 120 < sum(some) < 280
    # a counted slow answer draws nothing more: the other faults meet the same draws
    base = FaultPlan(seed=5, error_rate=0.3, truncate_rate=0.3, duplicate_rate=0.5)
    with_slow = base.model_copy(update={"slow_answer_requests": 3})
    strip = [Decision(**{**vars(d), "slow_answer": 0.0}) for d in decisions(with_slow)]
    assert strip == decisions(base)


def test_slow_answer_plan_validation() -> None:
    for bad in ({"slow_answer_seconds": 0}, {"slow_answer_seconds": 601},
                {"slow_answer_rate": 1.5}, {"slow_answer_requests": -1}):  # fmt: skip
        with pytest.raises(ValidationError):
            FaultPlan.model_validate(bad)
