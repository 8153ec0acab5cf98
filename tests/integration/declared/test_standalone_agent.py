"""The whole agent in this event loop, standalone (no explorer) with a workloads file: 4to6
peers of the file converge with the kernel link (in-memory here), `tfgateway status` shows each
entry and the client's WireGuard config, and an edit of the file is applied without SIGHUP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from tests.support.devexplorer import wait_until_async
from tests.support.wireguard import KeyPair, MemoryLink, new_key
from tfgateway.app import Agent
from tfgateway.config import Config
from tfgateway.declared.records import RECORDS_KEY
from tfgateway.node.identity import Identity
from tfgateway.primitives.fourtosix import FourToSixProvisioner, user_address, wireguard_public_key
from tfgateway.primitives.name_proofs import ProofMode
from tfgateway.primitives.wireguard import Peer
from tfgateway.status import collect, render_table

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SEED = b"b" * 32
ENDPOINT = "198.51.100.1:51820"


@asynccontextmanager
async def standalone(redis_url: str, workloads: Path, link: MemoryLink) -> AsyncIterator[Agent]:
    def factory(seed: bytes, endpoint: str, iface: str) -> Any:
        return FourToSixProvisioner(seed, endpoint, iface, link, workloads.parent / "fwd")

    config = Config(
        seed="unused", explorer="", workloads=str(workloads), redis=redis_url,
        domains=("gw.example",), endpoint=ENDPOINT, wg_iface="wg-test",
        detect_addresses=False, gateway_addresses=("198.51.100.1",),
        name_proof=ProofMode.FIRST_COME,
    )  # fmt: skip
    agent = Agent(config, Identity(SEED), fourtosix_factory=factory, handle_signals=False)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_standalone_serves_the_file_and_status_shows_the_client_config(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis, aredis: redis.asyncio.Redis
) -> None:
    link = MemoryLink("wg-test")
    stale = new_key()  # a peer no workload declares: converge removes it
    link.table[stale] = Peer(stale, ("fd00::99/128",), 25)
    laptop = KeyPair()
    workloads = tmp_path / "workloads.toml"
    workloads.write_text(f'[[fourtosix]]\nname = "laptop"\npublic_key = "{laptop.public}"\n')
    async with standalone(redis_url, workloads, link) as agent:

        async def served() -> bool:
            return set(link.table) == {laptop.public}

        await wait_until_async(served, timeout=20, what="the file's peer, and only it")
        assert agent.standalone
        assert not agent.registered.is_set()
        address = user_address(SEED, "0:laptop")
        assert link.table[laptop.public].allowed_ips == (f"{address}/128",)

        status = await collect(aredis)
        text = render_table(status)
        assert f"Address = {address}/128" in text
        assert f"PublicKey = {wireguard_public_key(SEED)}" in text
        assert f"Endpoint = {ENDPOINT}" in text
        assert laptop.private not in text

        # An edit (atomic rename) is noticed without a signal; a reconcile keeps the peers.
        other = new_key()
        tmp = workloads.with_suffix(".new")
        tmp.write_text(
            f'[[fourtosix]]\nname = "laptop"\npublic_key = "{laptop.public}"\n'
            f'[[fourtosix]]\nname = "phone"\npublic_key = "{other}"\n'
        )
        tmp.replace(workloads)

        async def both() -> bool:
            return set(link.table) == {laptop.public, other}

        await wait_until_async(both, timeout=20, what="the added peer")
        await agent.reconcile()
        assert set(link.table) == {laptop.public, other}
        raw = redis_db.hget(RECORDS_KEY, "phone")
        assert isinstance(raw, bytes)
        record = json.loads(raw)
        assert record["state"] == "ok"
        assert record["result"]["ips"] == [str(user_address(SEED, "0:phone"))]
