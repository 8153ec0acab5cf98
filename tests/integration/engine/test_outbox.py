"""The durable outbox: persisted before sending, ordered per workload, retried until
acknowledged, dropped only when the explorer refuses for good, reloaded after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from tests.support.agent_stack import SEED, fast_backoff, register
from tests.support.devexplorer import wait_until_async
from tfgateway.engine.outbox import OUTBOX_KEY, STATS_FIELD, Outbox
from tfgateway.explorer.client import ExplorerClient
from tfgateway.node.identity import Identity
from tfgateway_devexplorer.admin_client import AdminClient

NODE = Identity(SEED).node_id
BODY = (
    b'{"category":7,"workload_id":"%s","data_json":null,"signature":"ab","state":1,'
    b'"message":"","epoch":0,"node_id":""}\n'
)


@pytest.fixture
async def explorer(explorer_url: str) -> AsyncIterator[ExplorerClient]:
    """The agent's explorer client for the test node, on the development explorer."""
    client = ExplorerClient(explorer_url, Identity(SEED), timeout=5)
    yield client
    await client.aclose()


async def test_persisted_before_sending_and_survives_restart(
    aredis: redis.asyncio.Redis, explorer: ExplorerClient, admin: AdminClient, redis_db: redis.Redis
) -> None:
    w = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.1"])
    outbox = Outbox(aredis, explorer, backoff=fast_backoff)
    await outbox.put_result(w.gwid, BODY % w.gwid.encode())
    await outbox.delete(w.gwid)
    # written to redis before anything was sent
    assert redis_db.hlen(OUTBOX_KEY) == 2
    assert not (await admin.get_workload(w.id)).answered
    # "restart": a new outbox on the same redis delivers what the old one left
    second = Outbox(aredis, explorer, backoff=fast_backoff)
    assert await second.load() == 2
    assert second.has_pending(w.gwid, "result")
    assert await second.deliver_once()
    assert redis_db.hlen(OUTBOX_KEY) == 0
    state = await admin.state()
    # order kept: the result first, then the delete
    assert [p["gwid"] for p in state["result_puts"]] == [w.gwid]
    assert state["deletes"][0]["gwid"] == w.gwid
    assert state["result_puts"][0]["time"] <= state["deletes"][0]["time"]
    assert (await admin.get_workload(w.id)).next_action == 6
    # a fresh sequence number never reuses one still in the hash
    await second.put_result(w.gwid, BODY % w.gwid.encode())
    assert int(redis_db.hkeys(OUTBOX_KEY)[0]) > 2


async def test_retry_on_5xx_drop_on_404(
    aredis: redis.asyncio.Redis, explorer: ExplorerClient, admin: AdminClient, redis_db: redis.Redis
) -> None:
    w = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.1"])
    outbox = Outbox(aredis, explorer, backoff=fast_backoff)
    await admin.set_faults(endpoints=["result"], error_requests=1, error_status=502)
    await outbox.put_result(w.gwid, BODY % w.gwid.encode())
    await outbox.delete("999-1")  # unknown to the explorer: 404 (faults hit PUTs only)
    assert not await outbox.deliver_once()  # 502 for ours (the 404 is dropped)
    assert outbox.dropped == 1
    assert [m.gwid for m in outbox.pending()] == [w.gwid]
    assert redis_db.hlen(OUTBOX_KEY) == 1
    assert await outbox.deliver_once()
    assert outbox.depth == 0
    assert redis_db.hlen(OUTBOX_KEY) == 0
    assert (await admin.get_workload(w.id)).state == 1


async def test_explorer_unreachable_then_back_run_loop(
    aredis: redis.asyncio.Redis, explorer: ExplorerClient, admin: AdminClient
) -> None:
    w = await admin.subdomain(NODE, 42, "a.gw.example.com", ["185.69.166.1"])
    outbox = Outbox(aredis, explorer, backoff=fast_backoff)
    await admin.set_faults(down=True)
    await outbox.put_result(w.gwid, BODY % w.gwid.encode())
    task = asyncio.create_task(outbox.run())
    try:
        assert not await outbox.deliver_once()
        await admin.clear_faults()

        async def empty() -> bool:
            return outbox.depth == 0

        await wait_until_async(empty, timeout=20, what="outbox delivered")
    finally:
        task.cancel()
    assert (await admin.get_workload(w.id)).state == 1


async def test_stats_coalesced_and_wait_for_registration(
    aredis: redis.asyncio.Redis, explorer: ExplorerClient, admin: AdminClient, redis_db: redis.Redis
) -> None:
    gate = asyncio.Event()
    outbox = Outbox(aredis, explorer, backoff=fast_backoff, stats_gate=gate)
    await outbox.stats({"proxy": 1})
    await outbox.stats({"proxy": 2, "subdomain": 5})
    assert redis_db.hexists(OUTBOX_KEY, STATS_FIELD)
    assert await outbox.deliver_once()
    assert (await admin.state())["reserved_resources_posts"] == []  # not registered yet
    await register(explorer)
    gate.set()
    assert await outbox.deliver_once()
    posts = (await admin.state())["reserved_resources_posts"]
    assert len(posts) == 1
    assert (posts[0]["proxy"], posts[0]["subdomain"]) == (2, 5)
    assert not redis_db.hexists(OUTBOX_KEY, STATS_FIELD)


async def test_persist_all_after_data_loss(
    aredis: redis.asyncio.Redis, explorer: ExplorerClient, redis_db: redis.Redis
) -> None:
    outbox = Outbox(aredis, explorer, backoff=fast_backoff)
    await outbox.delete("5-1")
    await outbox.stats({"proxy": 1})
    redis_db.flushall()
    await outbox.persist_all()
    assert redis_db.hlen(OUTBOX_KEY) == 2
    reloaded = Outbox(aredis, explorer, backoff=fast_backoff)
    assert await reloaded.load() == 2


class InstantExplorer:
    """Acknowledges every result at once (after a loop turn, like a pipe or a socket)."""

    def __init__(self) -> None:
        self.puts: list[str] = []

    async def put_result(self, gwid: str, body: bytes) -> None:
        await asyncio.sleep(0)
        self.puts.append(gwid)


async def test_delivered_entries_leave_redis_in_few_hdels_with_many_workers(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 workers deliver 2,000 results: the entries are removed from redis in batches, one
    HDEL in flight at a time (each worker sending the whole growing batch again while one was
    in flight made thousands, each up to the batch size)."""
    stub = InstantExplorer()
    outbox = Outbox(aredis, stub, backoff=fast_backoff, concurrency=64)  # type: ignore[arg-type]
    await asyncio.gather(*(outbox.put_result(f"{i}-1", BODY % b"x") for i in range(2000)))
    assert redis_db.hlen(OUTBOX_KEY) == 2000
    hdels: list[int] = []
    batch = outbox._batch
    original = batch.hdel

    async def spy(key: str, *fields: str) -> int:
        hdels.append(len(fields))
        return await original(key, *fields)

    monkeypatch.setattr(batch, "hdel", spy)
    assert await outbox.deliver_once()
    assert len(stub.puts) == 2000
    assert redis_db.hlen(OUTBOX_KEY) == 0
    assert sum(hdels) == 2000  # each entry removed once
    assert len(hdels) <= 2000 // 64 + 2
