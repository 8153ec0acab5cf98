"""Engine semantics (spec §5-6 and the fixes) against real redis and the dev explorer over HTTP.

Primitives are replaced by a recording provisioner here; the real ones are exercised by
tests/integration/test_agent.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from tests.support.agent_stack import RecordingProvisioner, Stack, engine_stack
from tests.support.devexplorer import wait_until_async
from tfgateway.engine.cache import RESERVATIONS_KEY
from tfgateway.engine.engine import POLL_PAGE_SIZE, Engine, chains
from tfgateway.engine.outbox import OUTBOX_KEY
from tfgateway.explorer.client import PollResult
from tfgateway.explorer.workloads import job_from_item
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.provisioner import ProvisionError, is_reapplying
from tfgateway.telemetry.logs import Fields
from tfgateway_devexplorer.admin_client import AdminClient, WorkloadInfo

NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"


def provisioners(rec: RecordingProvisioner) -> dict[str, RecordingProvisioner]:
    return dict.fromkeys(("proxy", "reverse_proxy", "subdomain", "domain_delegate"), rec)


def subdomain_specs(prefix: str, n: int) -> list[dict[str, object]]:
    """`n` subdomain workloads of user 42 for the admin API's bulk create."""
    return [
        {"type": "subdomain", "node_id": NODE, "customer_tid": 42,
         "domain": f"{prefix}{i}.gw.example.com", "ips": ["185.69.166.1"]}
        for i in range(n)
    ]  # fmt: skip


StartEngine = Callable[[RecordingProvisioner], AbstractAsyncContextManager[Stack]]


@pytest.fixture
def rec() -> RecordingProvisioner:
    return RecordingProvisioner()


@pytest.fixture
def start_engine(redis_url: str, explorer_url: str) -> StartEngine:
    """Starts an engine on this test's redis and development explorer with `rec` as every
    primitive: `async with start_engine(rec) as stack` (again, for a restart)."""

    def start(rec: RecordingProvisioner) -> AbstractAsyncContextManager[Stack]:
        return engine_stack(redis_url, explorer_url, provisioners(rec))

    return start


@pytest.fixture
async def stack(start_engine: StartEngine, rec: RecordingProvisioner) -> AsyncIterator[Stack]:
    """The engine most tests need: started once on `rec`, stopped after the test."""
    async with start_engine(rec) as started:
        yield started


async def drain(stack: Stack) -> None:
    outbox = stack.outbox
    for _ in range(50):
        if await outbox.deliver_once() and outbox.depth == 0:
            return
    raise AssertionError(f"outbox not drained: {outbox.pending()}")


async def test_order_by_type_results_cache_and_stats(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient, redis_db: redis.Redis
) -> None:
    p = await admin.proxy(NODE, 42, "p.gw.example.com", "185.69.166.1", 80)
    s = await admin.subdomain(NODE, 42, "s.gw.example.com", ["185.69.166.2"])
    d = await admin.delegate(NODE, 42, "d.example.org")
    assert await stack.engine.poll_once() is False  # done: no full page waiting
    assert list(rec.calls) == [
        ("provision", d.gwid),
        ("provision", s.gwid),
        ("provision", p.gwid),
    ]
    await drain(stack)
    for w in (p, s, d):
        info = await admin.get_workload(w.id)
        assert info.state == 1, info.result
    assert set(redis_db.hkeys(RESERVATIONS_KEY)) == {w.gwid.encode() for w in (p, s, d)}
    state = await admin.state()
    last = state["reserved_resources_posts"][-1]
    assert (last["proxy"], last["subdomain"], last["delegate_domain"]) == (1, 1, 1), last
    assert stack.engine.counters.as_dict() == {
        "proxy": 1,
        "reverse_proxy": 0,
        "subdomain": 1,
        "delegate_domain": 1,
    }


async def test_restart_replays_from_zero_without_new_results(
    start_engine: StartEngine, rec: RecordingProvisioner, admin: AdminClient
) -> None:
    async with start_engine(rec) as stack:
        await admin.subdomain(NODE, 42, "s.gw.example.com", ["185.69.166.2"])
        await stack.engine.poll_once()
        await drain(stack)
    puts_before = len((await admin.state())["result_puts"])
    rec.calls.clear()
    async with start_engine(rec) as stack:
        assert stack.engine.counters.as_dict()["subdomain"] == 1
        await stack.engine.poll_once()
        await drain(stack)
    assert rec.calls == []
    assert len((await admin.state())["result_puts"]) == puts_before


async def provisioned_then_put_lost(
    start_engine: StartEngine, rec: RecordingProvisioner, admin: AdminClient, r: redis.Redis
) -> WorkloadInfo:
    """A subdomain provisioned by an engine that stopped before its result PUT went out, and
    the PUT lost (as upstream's fire-and-forget could): the explorer has no answer."""
    async with start_engine(rec) as stack:
        w = await admin.subdomain(NODE, 42, "s.gw.example.com", ["185.69.166.2"])
        await stack.engine.poll_once()
    r.delete(OUTBOX_KEY)
    assert not (await admin.get_workload(w.id)).answered
    return w


async def test_lost_put_is_resent_then_f4_delete_still_tears_down(
    start_engine: StartEngine, rec: RecordingProvisioner, admin: AdminClient, redis_db: redis.Redis
) -> None:
    w = await provisioned_then_put_lost(start_engine, rec, admin, redis_db)
    # The user deletes it; the explorer's copy of the result is still the zero value
    # (state 0), which made upstream skip the teardown (F4).
    await admin.delete_workload(w.id)
    async with start_engine(rec) as stack:
        await stack.engine.poll_once()
        await drain(stack)
    assert rec.calls[-1] == ("decommission", w.gwid)
    assert redis_db.hlen(RESERVATIONS_KEY) == 0
    assert (await admin.get_workload(w.id)).next_action == 6


async def test_unacknowledged_result_is_resent_once(
    start_engine: StartEngine, rec: RecordingProvisioner, admin: AdminClient, redis_db: redis.Redis
) -> None:
    w = await provisioned_then_put_lost(start_engine, rec, admin, redis_db)
    async with start_engine(rec) as stack:
        await stack.engine.poll_once()
        await stack.engine.poll_once()  # pending: not queued twice
        assert len(stack.outbox.pending()) == 1
        await drain(stack)
    info = await admin.get_workload(w.id)
    cached = redis_db.hget(RESERVATIONS_KEY, w.gwid)
    assert info.state == 1
    assert info.result["signature"].encode() in cached  # type: ignore[operator]
    assert rec.calls == [("provision", w.gwid)]


async def test_result_delivered_while_a_poll_answer_was_in_flight_is_not_resent(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll answer written before our PUT arrived must not make the engine send it again
    (a re-sent result also pops the workload off the explorer's queue, hiding a delete)."""
    w = await admin.subdomain(NODE, 42, "s.gw.example.com", ["185.69.166.2"])
    assert await stack.engine.poll_once() is False  # provisioned; its PUT is queued
    real_poll = stack.engine.explorer.poll

    async def stale_poll(from_id: int) -> PollResult:
        answer = await real_poll(from_id)  # still without our result: the PUT is queued
        await drain(stack)  # ... and arrives while the answer travels
        return answer

    monkeypatch.setattr(stack.engine.explorer, "poll", stale_poll)
    await stack.engine.poll_once()
    await drain(stack)
    puts = [p for p in (await admin.state())["result_puts"] if p["gwid"] == w.gwid]
    assert len(puts) == 1, puts
    assert rec.calls == [("provision", w.gwid)]


async def test_failure_gives_error_result_and_delete_not_cached(
    stack: Stack, admin: AdminClient, redis_db: redis.Redis
) -> None:
    bad = await admin.subdomain(NODE, 42, "refuse.gw.example.com", ["185.69.166.2"])
    good = await admin.subdomain(NODE, 42, "ok.gw.example.com", ["185.69.166.2"])
    await stack.engine.poll_once()
    await drain(stack)
    info = await admin.get_workload(bad.id)
    assert info.next_action == 6
    puts = [p for p in (await admin.state())["result_puts"] if p["gwid"] == bad.gwid]
    assert puts[0]["result"]["state"] == 0
    assert "refused by the test" in puts[0]["result"]["message"]
    assert redis_db.hkeys(RESERVATIONS_KEY) == [good.gwid.encode()]


async def test_unknown_and_malformed_workloads_answered_rest_processed(
    stack: Stack, admin: AdminClient
) -> None:
    container = await admin.create_workload("container", NODE, 42)
    broken = await admin.create_workload(
        "proxy", NODE, 42, domain="x.gw.example.com", overrides={"port": "eighty"}
    )
    good = await admin.subdomain(NODE, 42, "ok.gw.example.com", ["185.69.166.2"])
    assert await stack.engine.poll_once() is False  # done: no full page waiting
    await drain(stack)
    messages = {
        p["gwid"]: p["result"]["message"]
        for p in (await admin.state())["result_puts"]
        if p.get("result")
    }
    assert messages[container.gwid] == "type of reservation not supported: container"
    assert messages[broken.gwid].startswith("malformed workload: port")
    assert (await admin.get_workload(good.id)).state == 1
    assert (await admin.get_workload(broken.id)).next_action == 6


async def test_undecodable_poll_keeps_cursor(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient
) -> None:
    first = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.2"])
    await stack.engine.poll_once()
    cursor = stack.engine.cursor
    assert cursor == first.id + 1
    await admin.subdomain(NODE, 42, "b.gw.example.com", ["185.69.166.2"])
    await admin.set_faults(endpoints=["poll"], truncate_requests=1)
    assert await stack.engine.poll_once() is None
    assert stack.engine.cursor == cursor  # not rewound to 1 (F8)
    assert await stack.engine.poll_once() is False  # done: no full page waiting
    assert len(rec.applied) == 2


async def test_redis_down_is_not_blamed_on_the_user(stack: Stack, admin: AdminClient) -> None:
    w = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.2"])
    real_put = stack.engine.outbox.put_result  # caches the workload and queues its result
    failures = iter([True])

    async def flaky_put(gwid: str, body: bytes, **kwargs: Any) -> None:
        if next(failures, False):
            raise redis.exceptions.ConnectionError("redis went away")
        await real_put(gwid, body, **kwargs)

    stack.engine.outbox.put_result = flaky_put  # type: ignore[method-assign]
    assert await stack.engine.poll_once() is None
    assert stack.engine.cursor == 0
    assert await stack.engine.cache.get(w.gwid) is None  # neither cached nor queued
    assert stack.engine.counters.as_dict()["subdomain"] == 0
    assert await stack.engine.poll_once() is False  # done: no full page waiting
    await drain(stack)
    assert (await admin.get_workload(w.id)).state == 1
    puts = [p for p in (await admin.state())["result_puts"] if p["gwid"] == w.gwid]
    assert [p["result"]["state"] for p in puts] == [1]


async def test_reconcile_reapplies_live_without_results(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient, redis_db: redis.Redis
) -> None:
    w = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.2"])
    await stack.engine.poll_once()
    await drain(stack)
    puts = len((await admin.state())["result_puts"])
    redis_db.flushall()
    rec.calls.clear()
    assert await stack.engine.reconcile(rewrite_cache=True) == 1
    assert rec.calls == [("provision", w.gwid)]
    assert redis_db.hexists(RESERVATIONS_KEY, w.gwid)
    await drain(stack)
    assert len((await admin.state())["result_puts"]) == puts


class RedisDownProvisioner(RecordingProvisioner):
    """Re-applies as a real primitive does when redis drops mid-pass: its redis error wrapped in
    a ProvisionError; and records whether the engine marked the call as a re-application."""

    def __init__(self) -> None:
        super().__init__()
        self.reapplying: list[bool] = []
        self.redis_down = False

    async def provision(self, r: Reservation) -> bytes | None:
        self.reapplying.append(is_reapplying())
        if self.redis_down:
            try:
                raise RedisConnectionError("Connection reset by peer")
            except RedisConnectionError as exc:
                raise ProvisionError(f"proxy store error: {exc}") from exc
        return await super().provision(r)


async def test_reconcile_marks_reapplications_and_raises_redis_trouble_as_redis_errors(
    start_engine: StartEngine, admin: AdminClient
) -> None:
    """The caller (the agent's watch loop) retries a pass on RedisError; a wrapped one used to
    escape it and stop the agent."""
    rec = RedisDownProvisioner()
    async with start_engine(rec) as stack:
        await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.2"])
        await stack.engine.poll_once()
        assert rec.reapplying == [False]  # a new workload
        assert await stack.engine.reconcile() == 1
        assert rec.reapplying == [False, True]
        rec.redis_down = True
        with pytest.raises(RedisError, match="reconcile interrupted: proxy store error"):
            await stack.engine.reconcile()
        assert not is_reapplying()


class ReplacingProvisioner(RecordingProvisioner):
    """On its first provision, swaps another live entry for an equal copy, as a poll's cache
    hit does while a reconcile pass runs (right after a restart, the poll from 0 does)."""

    def __init__(self) -> None:
        super().__init__()
        self.engine: Engine | None = None
        self.victim = ""

    async def provision(self, r: Reservation) -> bytes | None:
        if self.engine is not None and self.victim in self.engine.live:
            live = self.engine.live
            live[self.victim] = dataclasses.replace(live[self.victim])
            self.engine = None
        return await super().provision(r)


async def test_reconcile_reapplies_entries_a_job_replaced_during_the_pass(
    start_engine: StartEngine, admin: AdminClient
) -> None:
    rec = ReplacingProvisioner()
    async with start_engine(rec) as stack:
        a = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.2"])
        b = await admin.subdomain(NODE, 42, "b.gw.example.com", ["185.69.166.2"])
        await stack.engine.poll_once()
        rec.calls.clear()
        rec.engine, rec.victim = stack.engine, b.gwid
        assert await stack.engine.reconcile() == 2
        assert sorted(rec.calls) == sorted([("provision", a.gwid), ("provision", b.gwid)])


async def test_reference_migration(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient, redis_db: redis.Redis
) -> None:
    old = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.1"])
    await stack.engine.poll_once()
    new = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.1"], reference=old.gwid)
    thief = await admin.subdomain(NODE, 7, "a.gw.example.com", ["185.69.166.1"], reference=old.gwid)
    await stack.engine.poll_once()
    await drain(stack)
    assert rec.calls == [("provision", old.gwid)]  # migrated, not provisioned again
    assert redis_db.hkeys(RESERVATIONS_KEY) == [old.gwid.encode()]  # same cache key
    assert (await admin.get_workload(new.id)).state == 1
    puts = [p for p in (await admin.state())["result_puts"] if p["gwid"] == thief.gwid]
    assert puts[0]["result"]["state"] == 0
    assert "another owner" in puts[0]["result"]["message"]
    # the old workload coming back (replay) does not take it back or tear it down
    stack.engine.request_replay()
    await stack.engine.poll_once()
    await admin.delete_workload(old.id)
    stack.engine.request_replay()
    await stack.engine.poll_once()
    await drain(stack)
    assert ("decommission", old.gwid) not in rec.calls
    assert redis_db.hexists(RESERVATIONS_KEY, old.gwid)
    # deleting the new workload removes the reservation
    await admin.delete_workload(new.id)
    stack.engine.request_replay()
    await stack.engine.poll_once()
    await drain(stack)
    assert rec.calls[-1] == ("decommission", old.gwid)
    assert redis_db.hlen(RESERVATIONS_KEY) == 0


async def test_periodic_replay_from_zero(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient
) -> None:
    w = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.1"])
    stack.engine.replay_interval = 0.3
    task = asyncio.create_task(stack.engine.run())
    try:
        froms: list[str] = []

        async def replayed() -> bool:
            poll = (await admin.state())["polls"].get(NODE, {})
            if poll:
                froms.append(poll["last_from"])
            advanced = [i for i, f in enumerate(froms) if f != "0"]
            return bool(advanced) and "0" in froms[advanced[0] :]

        await wait_until_async(replayed, timeout=20, what="a replay from 0")
    finally:
        task.cancel()
    assert rec.calls == [("provision", w.gwid)]  # replays are cache hits


async def test_duplicated_and_shuffled_batches_apply_once(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient
) -> None:
    await admin.set_faults(endpoints=["poll"], seed=7, duplicate_rate=1.0, shuffle_rate=1.0)
    ws = [
        await admin.subdomain(NODE, 42, f"s{i}.gw.example.com", ["185.69.166.1"]) for i in range(6)
    ]
    ws.append(await admin.delegate(NODE, 42, "d.example.org"))
    await stack.engine.poll_once()
    await drain(stack)
    assert (await admin.faults())["applied"], "the poll answer was not mangled"
    assert sorted(rec.calls) == sorted(("provision", w.gwid) for w in ws)
    assert rec.calls[0] == ("provision", ws[-1].gwid)  # delegations first, whatever the order
    puts = [p["gwid"] for p in (await admin.state())["result_puts"]]
    assert sorted(puts) == sorted(w.gwid for w in ws)


async def test_full_page_polls_again_at_once(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient
) -> None:
    await admin.create_workloads(subdomain_specs("s", 201))
    assert await stack.engine.poll_once() is True  # a full page of 200: more may wait
    assert await stack.engine.poll_once() is False  # the last one
    assert len(rec.calls) == 201


async def test_crash_before_caching_then_delete_cleans_up(
    start_engine: StartEngine, admin: AdminClient, redis_db: redis.Redis
) -> None:
    rec = RecordingProvisioner(refuse_users={"7"})
    async with start_engine(rec) as stack:
        live = await admin.subdomain(NODE, 42, "live.gw.example.com", ["185.69.166.1"])
        lost = await admin.subdomain(NODE, 42, "lost.gw.example.com", ["185.69.166.1"])
        await stack.engine.poll_once()
        await drain(stack)
    # as if killed after the primitive wrote redis but before the cache entry
    redis_db.hdel(RESERVATIONS_KEY, lost.gwid)
    await admin.delete_workload(lost.id)
    # a never-provisioned workload on a live name, deleted: must not touch the live one
    taken = await admin.subdomain(NODE, 7, "live.gw.example.com", ["185.69.166.1"], next_action=4)
    rec.calls.clear()
    async with start_engine(rec) as stack:
        await stack.engine.poll_once()
        await drain(stack)
    assert ("decommission", lost.gwid) in rec.calls  # the orphan is torn down
    # the refused workload on a live name never tears down the live one
    assert ("decommission", taken.gwid) not in rec.calls
    assert live.gwid in rec.applied
    assert (await admin.get_workload(lost.id)).next_action == 6
    assert (await admin.get_workload(taken.id)).next_action == 6


class GatedProvisioner(RecordingProvisioner):
    """Records when each provision starts and ends; `gate` holds provisions until `release`
    calls are in flight together (a sequential engine would never get there)."""

    def __init__(self, release: int = 0) -> None:
        super().__init__()
        self.release = release
        self.in_flight = 0
        self.peak = 0
        self.events: list[tuple[str, str]] = []
        self.gate = asyncio.Event()

    async def provision(self, r: Reservation) -> bytes | None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.events.append(("start", r.id))
        if self.in_flight >= self.release:
            self.gate.set()
        try:
            async with asyncio.timeout(5):
                await self.gate.wait()
            await asyncio.sleep(0)  # let another job of the wave start meanwhile, if it may
            return await super().provision(r)
        finally:
            self.in_flight -= 1
            self.events.append(("end", r.id))


async def test_jobs_of_a_page_run_concurrently_but_one_name_in_order(
    start_engine: StartEngine, admin: AdminClient
) -> None:
    rec = GatedProvisioner(release=20)
    async with start_engine(rec) as stack:
        others = [
            await admin.subdomain(NODE, 42, f"n{i}.gw.example.com", ["185.69.166.2"])
            for i in range(20)
        ]
        first = await admin.subdomain(NODE, 42, "same.gw.example.com", ["185.69.166.2"])
        second = await admin.subdomain(NODE, 43, "same.gw.example.com", ["185.69.166.3"])
        assert await stack.engine.poll_once() is False
        assert rec.peak >= 20  # the 20 different names were in flight together
        assert {r for _, r in rec.calls} == {w.gwid for w in [*others, first, second]}
        same = [(e, r) for e, r in rec.events if r in (first.gwid, second.gwid)]
        assert same == [
            ("start", first.gwid),
            ("end", first.gwid),
            ("start", second.gwid),
            ("end", second.gwid),
        ]


async def test_answered_items_awaiting_delivery_are_not_handled_again(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient
) -> None:
    """The explorer serves unanswered workloads again on every poll once nothing newer is
    left; while their results wait in the outbox, polls must not redo (or re-parse) them."""
    works = [
        await admin.subdomain(NODE, 42, f"w{i}.gw.example.com", ["185.69.166.2"]) for i in range(5)
    ]
    assert await stack.engine.poll_once() is False
    done = stack.engine.jobs_done
    assert done == 5
    for _ in range(3):  # nothing delivered yet: the same five come back each time
        await stack.engine.poll_once()
    assert stack.engine.jobs_done == done
    await drain(stack)
    puts = [p["gwid"] for p in (await admin.state())["result_puts"]]
    assert sorted(puts) == sorted(w.gwid for w in works)
    assert len(rec.calls) == 5


def test_chains_group_same_workload_same_name_and_serial_types() -> None:
    def res(rid: str, rtype: str, domain: str | None) -> Reservation:
        data = b"{}" if domain is None else f'{{"domain":"{domain}"}}'.encode()
        return Reservation(id=rid, user_id="1", type=rtype, data=data)

    items = [
        res("1-1", "subdomain", "a.gw.example.com"),  # 0
        res("2-1", "subdomain", "B.gw.example.com."),  # 1: same name as 4, once normalised
        res("3-1", "subdomain", "c.gw.example.com"),  # 2
        res("1-1", "subdomain", "x.gw.example.com"),  # 3: same workload as 0
        res("4-1", "proxy", "b.gw.example.com"),  # 4
        res("5-1", "gateway4to6", None),  # 5
        res("6-1", "gateway4to6", None),  # 6: serial type, with 5
        res("7-1", "domain_delegate", "one.org"),  # 7
        res("8-1", "domain_delegate", "two.org"),  # 8: serial type, with 7
        res("9-1", "proxy", "x.gw.example.com"),  # 9: same name as 3, so with 0 too
    ]
    assert sorted(chains(items)) == [[0, 3, 9], [1, 4], [2], [5, 6], [7, 8]]


async def test_a_full_page_of_items_awaiting_delivery_is_no_reason_to_rush(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient
) -> None:
    """Once nothing newer qualifies the explorer serves its queue (unanswered workloads) with
    X-Last-Id = `from`: the cursor creeps by one. A full page of it whose results are all
    still being delivered must not make the engine poll again at once (it did, over and over,
    while 5,000 results were being delivered)."""
    await admin.create_workloads(subdomain_specs("q", POLL_PAGE_SIZE))
    assert await stack.engine.poll_once() is True  # a full page of new work: catch up
    cursor = stack.engine.cursor
    assert await stack.engine.poll_once() is False  # the queue: all awaiting delivery
    assert stack.engine.cursor == cursor + 1  # X-Last-Id = from, as the real explorer
    assert len(rec.calls) == POLL_PAGE_SIZE


async def test_each_job_logs_one_structured_line(
    start_engine: StartEngine,
    rec: RecordingProvisioner,
    admin: AdminClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One `job` line per job with its fields as data (keys of their own in --log-format json),
    text unchanged: `job id=… type=… action=… outcome=… duration_ms=…`."""
    caplog.set_level(logging.INFO, logger="tfgateway.engine.engine")
    async with start_engine(rec) as stack:
        ok = await admin.subdomain(NODE, 42, "ok.gw.example.com", ["185.69.166.2"])
        bad = await admin.subdomain(NODE, 42, "refuse.gw.example.com", ["185.69.166.2"])
        await stack.engine.poll_once()
    jobs = {r.msg.fields["id"]: r for r in caplog.records if isinstance(r.msg, Fields)}
    assert set(jobs) == {ok.gwid, bad.gwid}
    fields = jobs[ok.gwid].msg.fields  # type: ignore[union-attr]
    assert (fields["type"], fields["action"], fields["outcome"]) == ("subdomain", "provision", "ok")
    assert isinstance(fields["duration_ms"], float)
    assert jobs[bad.gwid].msg.fields["outcome"] == "failed"  # type: ignore[union-attr]
    assert (
        jobs[ok.gwid].getMessage().startswith(f"job id={ok.gwid} type=subdomain action=provision")
    )


@dataclasses.dataclass
class HookedProvisioner(RecordingProvisioner):
    """A recording provisioner whose `provision` first awaits `gate` (when set)."""

    gate: Callable[[Reservation], Awaitable[None]] | None = None

    async def provision(self, r: Reservation) -> bytes | None:
        if self.gate is not None:
            await self.gate(r)
        return await super().provision(r)


async def poll_count(admin: AdminClient) -> int:
    return int((await admin.state())["polls"].get(NODE, {}).get("count", 0))


async def test_read_ahead_asks_for_the_next_page_while_the_jobs_run(
    start_engine: StartEngine, admin: AdminClient
) -> None:
    """The poll loop's catch-up: the next page is asked for while a full page's jobs run (the
    first job cannot finish before the explorer saw that poll), and taken, not asked again."""
    await admin.create_workloads(subdomain_specs("r", 2 * POLL_PAGE_SIZE + 50))

    async def next_page_asked(_r: Reservation) -> None:
        async def asked() -> bool:
            return await poll_count(admin) >= 2

        await wait_until_async(asked, timeout=20, what="the next page asked for")

    gated = HookedProvisioner(gate=next_page_asked)
    async with start_engine(gated) as stack:
        assert await stack.engine.poll_once(read_ahead=True) is True
        gated.gate = None
        assert await stack.engine.poll_once(read_ahead=True) is True
        assert await stack.engine.poll_once(read_ahead=True) is False  # 50: none read ahead
        assert await poll_count(admin) == 3  # each page asked for once
        assert sorted(gwid for _, gwid in gated.calls) == sorted(set(gated.applied))
        assert len(gated.calls) == 2 * POLL_PAGE_SIZE + 50


async def test_a_page_that_fails_drops_the_page_read_ahead(
    start_engine: StartEngine, admin: AdminClient
) -> None:
    """A page retried (redis trouble) is asked for again from the same cursor: the page read
    ahead for the cursor it did not reach is dropped, never processed."""
    await admin.create_workloads(subdomain_specs("f", 2 * POLL_PAGE_SIZE))
    failed: list[str] = []

    async def fail_once(r: Reservation) -> None:
        if not failed:
            failed.append(r.id)

            async def asked() -> bool:
                return await poll_count(admin) >= 2

            # fail only once the next page was asked for
            await wait_until_async(asked, timeout=20, what="the next page asked for")
            raise RedisConnectionError("redis went away (test)")

    gated = HookedProvisioner(gate=fail_once)
    async with start_engine(gated) as stack:
        assert await stack.engine.poll_once(read_ahead=True) is None
        assert stack.engine.cursor == 0
        assert await stack.engine.poll_once(read_ahead=True) is True
        assert failed[0] in gated.applied  # the first page again, not the one read ahead
        assert await stack.engine.poll_once(read_ahead=True) is True
        assert await stack.engine.poll_once(read_ahead=True) is False
        provisioned = {gwid for _, gwid in gated.calls}
        assert len(provisioned) == 2 * POLL_PAGE_SIZE
        assert failed[0] in gated.applied


async def test_a_waves_cache_entries_are_read_in_one_command(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache entries of a wave's jobs come in one HMGET before the jobs run; each job
    takes its own entry from there (no read of its own), and a second job of the same
    workload in the wave reads redis itself (the first may have changed its entry)."""
    cache = stack.engine.cache
    pages: list[list[str]] = []
    singles: list[str] = []
    get_many, get = cache.get_many, cache.get

    async def spy_get_many(ids: list[str]) -> list[bytes | None]:
        pages.append(list(ids))
        return await get_many(ids)

    async def spy_get(rid: str) -> Reservation | None:
        singles.append(rid)
        return await get(rid)

    monkeypatch.setattr(cache, "get_many", spy_get_many)
    monkeypatch.setattr(cache, "get", spy_get)
    works = [
        await admin.subdomain(NODE, 42, f"c{i}.gw.example.com", ["185.69.166.2"]) for i in range(5)
    ]
    assert await stack.engine.poll_once() is False
    assert pages == [[w.gwid for w in works]]
    assert singles == []
    assert len(rec.calls) == 5
    # the same workload twice in one wave: its first job takes the page's entry, the second
    # reads redis (and finds the result the first one cached: nothing provisioned again)
    item = next(i for i in (await stack.explorer.poll(0)).items if i["id"] == works[0].id)
    job = job_from_item(item)
    assert await stack.engine._run_wave([job, job])
    assert pages[-1] == [job.key]
    assert singles == [job.key]
    assert len(rec.calls) == 5


async def test_redis_failing_on_a_waves_read_fails_each_job_as_its_own_read_would(
    stack: Stack, rec: RecordingProvisioner, admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis failing on the wave's read: every job waits for redis as it did when it read on
    its own (nothing provisioned, nothing answered, the cursor kept), with one failed round
    trip for the wave; once redis is back each is applied and answered once."""
    cache = stack.engine.cache
    get_many, get = cache.get_many, cache.get
    reads: list[int] = []

    async def down(ids: list[str]) -> list[bytes | None]:
        reads.append(len(ids))
        raise RedisConnectionError("redis went away (test)")

    singles: list[str] = []

    async def no_single_read(rid: str) -> Reservation | None:
        singles.append(rid)  # a job reading redis again after the wave's read failed
        raise RedisConnectionError("redis went away (test)")

    monkeypatch.setattr(cache, "get_many", down)
    monkeypatch.setattr(cache, "get", no_single_read)
    works = [
        await admin.subdomain(NODE, 42, f"f{i}.gw.example.com", ["185.69.166.2"]) for i in range(3)
    ]
    cursor = stack.engine.cursor
    assert await stack.engine.poll_once() is None
    assert reads == [3]
    assert singles == []
    assert rec.calls == []
    assert stack.engine.cursor == cursor
    assert stack.outbox.depth == 0
    monkeypatch.setattr(cache, "get_many", get_many)
    monkeypatch.setattr(cache, "get", get)
    assert await stack.engine.poll_once() is False
    assert sorted(r for _, r in rec.calls) == sorted(w.gwid for w in works)
    await drain(stack)
    puts = [p["gwid"] for p in (await admin.state())["result_puts"]]
    assert sorted(puts) == sorted(w.gwid for w in works)
