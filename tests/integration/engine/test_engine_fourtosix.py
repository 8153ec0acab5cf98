"""The daemon's 4to6 wiring (in process, real redis and dev explorer, in-memory WireGuard link):
cached gateway4to6 reservations are converged at start instead of dropped from the cache as
upstream did, and new ones are provisioned with the spec §11 result data; a link that cannot be
set up makes gateway4to6 workloads fail with a clear message while everything else works."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis

from tests.support.devexplorer import wait_until_async
from tests.support.wireguard import MemoryLink, new_key
from tfgateway.app import Agent
from tfgateway.config import Config
from tfgateway.engine.cache import RESERVATIONS_KEY
from tfgateway.model.reservation import GoTime, Reservation, Result, encode_cache_value
from tfgateway.node.identity import Identity
from tfgateway.node.location import Location
from tfgateway.primitives.fourtosix import FourToSixProvisioner, user_address
from tfgateway.primitives.wireguard import Peer
from tfgateway_devexplorer.admin_client import AdminClient

SEED = b"a" * 32
ENDPOINT = "gw.example.com:51820"
NODE = Identity(SEED).node_id


def config(explorer_url: str, redis_url: str) -> Config:
    return Config(
        seed="unused",
        explorer=explorer_url,
        redis=redis_url,
        domains=("gw.example.com",),
        endpoint=ENDPOINT,
        wg_iface="wg-test",
        location=Location(latitude=1.5, longitude=2.5),
        detect_addresses=False,
        poll_interval=0.05,
        max_backoff=0.2,
    )


class BrokenLink(MemoryLink):
    async def create(self) -> bool:
        raise OSError("no WireGuard in this kernel")


@asynccontextmanager
async def running_agent(
    explorer_url: str, redis_url: str, link: MemoryLink, forwarding: Path
) -> AsyncIterator[Agent]:
    """The whole agent in this event loop, its 4to6 provisioner on `link`; stopped cleanly
    (exit code 0) at the end."""

    def factory(seed: bytes, endpoint: str, iface: str) -> Any:
        return FourToSixProvisioner(seed, endpoint, iface, link, forwarding)

    agent = Agent(
        config(explorer_url, redis_url),
        Identity(SEED),
        fourtosix_factory=factory,
        handle_signals=False,
    )
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_cached_4to6_converged_then_new_one_provisioned(
    tmp_path: Path, explorer_url: str, admin: AdminClient, redis_url: str, redis_db: redis.Redis
) -> None:
    link = MemoryLink("wg-test")
    stale = new_key()
    link.table[stale] = Peer(stale, ("fd00::99/128",), 25)
    cached_key = new_key()
    cached = Reservation(
        id="10-1",
        user_id="42",
        type="gateway4to6",
        data=json.dumps({"public_key": cached_key}).encode(),
        created=GoTime.from_unix(1610000000),
        result=Result(type="gateway4to6", id="10-1", created=GoTime.now_utc(), state=1),
    )
    redis_db.hset(RESERVATIONS_KEY, cached.id, encode_cache_value(cached))

    async with running_agent(explorer_url, redis_url, link, tmp_path / "forwarding"):

        async def converged() -> bool:
            return set(link.table) == {cached_key}

        await wait_until_async(converged, timeout=20, what="peers converged to the cache")
        assert link.table[cached_key].allowed_ips == (f"{user_address(SEED, '42')}/128",)
        assert redis_db.hexists(RESERVATIONS_KEY, "10-1")  # kept, not dropped
        key = new_key()
        w = await admin.gateway4to6(NODE, 43, key)
        info = await admin.wait_for_result(w.id, timeout=20)
        assert info.state == 1
        data = json.loads(info.result["data_json"])
        assert data["ips"] == [str(user_address(SEED, "43"))]
        assert data["peers"][0]["endpoint"] == ENDPOINT
        assert set(link.table) == {cached_key, key}


async def test_broken_wireguard_refuses_4to6_only(
    tmp_path: Path, explorer_url: str, admin: AdminClient, redis_url: str
) -> None:
    link = BrokenLink("wg-test")
    async with running_agent(explorer_url, redis_url, link, tmp_path / "forwarding"):
        tunnel = await admin.gateway4to6(NODE, 43, new_key())
        sub = await admin.subdomain(NODE, 43, "a.gw.example.com", ["185.69.166.1"])
        assert (await admin.wait_for_result(sub.id, timeout=20)).state == 1
        await admin.wait_for_deleted(tunnel.id, timeout=20)
        (put,) = [p for p in (await admin.state())["result_puts"] if p["gwid"] == tunnel.gwid]
        assert put["result"]["state"] == 0
        assert "not ready" in put["result"]["message"]
