"""Fault injection of the development explorer over real HTTP (what issue 8's tests rely on)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.support.devexplorer import wait_until_async
from tests.support.http import AsyncHTTP, SyncHTTP
from tfgateway_devexplorer.admin_client import AdminClient
from tfgateway_devexplorer.server import DevExplorer

NODE = "node-f"
POLL = f"/reservations/nodes/{NODE}/workloads"


async def test_counted_5xx_then_recovery_and_only_on_chosen_endpoints(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    await admin.set_faults(error_requests=2, error_status=502, endpoints=["poll"])
    assert (await http.get("/users/1")).status_code == 404  # not affected
    for _ in range(2):
        response = await http.get(POLL, params={"from": 0})
        assert response.status_code == 502
        assert response.json() == {"error": "injected fault"}
    assert (await http.get(POLL, params={"from": 0})).status_code == 200
    status = await admin.faults()
    assert status["applied"] == {"error": 2}
    assert status["remaining"]["error"] == 0


async def test_down_drops_connections_until_cleared(http: AsyncHTTP, admin: AdminClient) -> None:
    await admin.set_faults(down=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.get(POLL, params={"from": 0})
    assert (await admin.health())["ok"] is True  # the admin API keeps working
    await admin.clear_faults()
    assert (await http.get(POLL, params={"from": 0})).status_code == 200


async def test_drop_after_handling_keeps_the_effect(
    explorer: DevExplorer, http: AsyncHTTP, admin: AdminClient
) -> None:
    w = await admin.delegate(NODE, 1, "d.example.com")
    await admin.set_faults(drop_after_requests=1, endpoints=["result"])
    # urllib, not aiohttp: aiohttp sends an idempotent request again once on a dropped
    # connection, which would hide the drop
    put = SyncHTTP(explorer.url).put
    with pytest.raises(ConnectionError):
        await asyncio.to_thread(put, f"{POLL}/{w.gwid}", content=b'{"state":1}')
    assert (await admin.get_workload(w.id)).result["state"] == 1
    # a retry by the gateway is accepted again
    assert (await http.put(f"{POLL}/{w.gwid}", content=b'{"state":1}')).status_code == 201
    puts = (await admin.state())["result_puts"]
    assert [p["status"] for p in puts] == [201, 201]


async def test_truncated_and_malformed_bodies_keep_status_and_cursor(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    await admin.subdomain(NODE, 1, "s.example.com", ["10.1.1.1"])
    await admin.set_faults(truncate_requests=1, malformed_requests=1)
    for _ in range(2):
        response = await http.get(POLL, params={"from": 0})
        assert response.status_code == 200
        assert response.headers["X-Last-Id"] == "1"
        with pytest.raises(ValueError, match=r"."):
            response.json()
    assert (await http.get(POLL, params={"from": 0})).json()[0]["id"] == 1


async def test_duplicates_and_shuffles_are_deterministic_per_seed(
    explorer: DevExplorer, admin: AdminClient, http: AsyncHTTP
) -> None:
    await admin.create_workloads(
        [{"type": "delegate", "node_id": NODE, "customer_tid": 1, "domain": f"d{i}.example.com"}
         for i in range(8)]
    )  # fmt: skip

    async def run(seed: int) -> list[list[int]]:
        await admin.set_faults(seed=seed, duplicate_rate=0.5, shuffle_rate=0.5)
        out = []
        for _ in range(6):
            items = (await http.get(POLL, params={"from": 0})).json()
            out.append([item["id"] for item in items])
        return out

    first, again, other = await run(1), await run(1), await run(2)
    assert first == again
    assert first != other
    flat = [ids for ids in first if ids != list(range(1, 9))]
    assert flat, "some answers must be mangled"
    for ids in first:
        assert set(ids) == set(range(1, 9))


async def test_latency_delays_answers(http: AsyncHTTP, admin: AdminClient) -> None:
    await admin.set_faults(latency=2.0, endpoints=["poll"])
    with pytest.raises(TimeoutError):
        await http.get(POLL, params={"from": 0}, timeout=0.2)
    await admin.clear_faults()
    assert (await http.get(POLL, params={"from": 0}, timeout=1.0)).status_code == 200


async def test_paused_listener_refuses_connections_then_comes_back(
    explorer: DevExplorer, admin: AdminClient
) -> None:
    await admin.delegate(NODE, 1, "p.example.com")

    async def refused() -> bool:
        async with AsyncHTTP(explorer.url) as fresh:
            try:
                await fresh.get(POLL, params={"from": 0})
            except aiohttp.ClientConnectorError:
                return True
            return False

    async def serving() -> bool:
        return not await refused()

    await admin.pause_listener(1.0)
    await wait_until_async(refused, timeout=5, what="listener paused")
    await wait_until_async(serving, timeout=10, what="listener resumed")
    state = await admin.state()
    assert state["counter"] == 1  # nothing lost


async def test_slow_answer_after_handling_stores_then_answers_late(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    """The result PUT is stored at once but answered seconds later: a client that gives up
    first believes it failed, while the explorer already has the result."""
    w = await admin.delegate(NODE, 1, "slow.example.com")
    status = await admin.set_faults(
        slow_answer_requests=2, slow_answer_seconds=2.0, endpoints=["result"]
    )
    assert status["plan"]["slow_answer_seconds"] == 2.0
    with pytest.raises(TimeoutError):
        await http.put(f"{POLL}/{w.gwid}", content=b'{"state":1}', timeout=0.3)
    # the client gave up, yet the PUT was handled before the answer was held back
    assert (await admin.get_workload(w.id)).result["state"] == 1
    assert [p["status"] for p in (await admin.state())["result_puts"]] == [201]
    # a patient client gets the real answer, late
    started = time.monotonic()
    response = await http.put(f"{POLL}/{w.gwid}", content=b'{"state":1}', timeout=10)
    assert response.status_code == 201
    assert response.content == b"null\n"
    assert time.monotonic() - started >= 2.0
    # the count is used up: answers are prompt again, and polls were never affected
    assert (
        await http.put(f"{POLL}/{w.gwid}", content=b'{"state":1}', timeout=1)
    ).status_code == 201
    assert (await http.get(POLL, params={"from": 0}, timeout=1)).status_code == 200
    faults = await admin.faults()
    assert faults["applied"] == {"slow_answer": 2}
    assert faults["remaining"]["slow_answer"] == 0
