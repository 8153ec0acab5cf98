"""In-process pieces of the agent against a real redis and the development explorer over HTTP.

Owned by the agent's sync side (engine/outbox tests); the whole agent as a subprocess is in
tests/integration/test_agent.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from tests.support.devexplorer import devexplorer_in_process
from tfgateway.engine.cache import ReservationCache
from tfgateway.engine.engine import Engine
from tfgateway.engine.outbox import Outbox
from tfgateway.explorer.client import Backoff, ExplorerClient, gateway_body
from tfgateway.model.reservation import Reservation
from tfgateway.node.identity import Identity
from tfgateway.node.location import Location
from tfgateway.primitives.provisioner import Provisioner, ProvisionError
from tfgateway.store.url import connect
from tfgateway_devexplorer.admin_client import AdminClient
from tfgateway_devexplorer.server import DevExplorer

SEED = b"helloworldhelloworldhelloworld12"


def fast_backoff() -> Backoff:
    return Backoff(initial=0.02, maximum=0.2)


@dataclass
class RecordingProvisioner:
    """Stands in for a primitive: records calls; refuses data containing `refuse`."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    applied: dict[str, Reservation] = field(default_factory=dict)
    refuse_users: set[str] = field(default_factory=set)

    async def provision(self, r: Reservation) -> bytes | None:
        self.calls.append(("provision", r.id))
        if b"refuse" in r.data or r.user_id in self.refuse_users:
            raise ProvisionError(f"domain of {r.id} refused by the test")
        self.applied[r.id] = r
        return None

    async def decommission(self, r: Reservation) -> None:
        self.calls.append(("decommission", r.id))
        self.applied.pop(r.id, None)


@asynccontextmanager
async def dev_explorer() -> AsyncIterator[tuple[DevExplorer, AdminClient]]:
    """The development explorer in process and its admin client."""
    async with devexplorer_in_process() as server, AdminClient(server.url) as admin:
        yield server, admin


async def register(explorer: ExplorerClient) -> None:
    """Registers the test node (`SEED`) as a gateway of `gw.example.com`."""
    identity = Identity(SEED)
    await explorer.register(
        gateway_body(
            node_id=identity.node_id,
            public_key_hex=identity.public_key_hex,
            farm_id=0,
            os_version="test@0000000",
            location=Location(latitude=51.05, longitude=3.72),
            domains=["gw.example.com"],
            nameservers=["ns1.example.com"],
            tcp_router_port=18000,
            free_to_use=False,
        )
    )


@dataclass
class Stack:
    identity: Identity
    redis: aioredis.Redis
    explorer: ExplorerClient
    outbox: Outbox
    engine: Engine


@asynccontextmanager
async def engine_stack(
    redis_url: str,
    explorer_url: str,
    provisioners: Mapping[str, Provisioner],
    *,
    poll_interval: float = 0.05,
) -> AsyncIterator[Stack]:
    identity = Identity(SEED)
    redis = connect(redis_url)
    explorer = ExplorerClient(explorer_url, identity, timeout=5)
    outbox = Outbox(redis, explorer, backoff=fast_backoff, stats_interval=0)
    await outbox.load()
    await register(explorer)
    engine = Engine(
        identity=identity,
        explorer=explorer,
        cache=ReservationCache(redis),
        outbox=outbox,
        provisioners=provisioners,
        poll_interval=poll_interval,
        backoff=fast_backoff,
    )
    await engine.load()
    try:
        yield Stack(identity, redis, explorer, outbox, engine)
    finally:
        await explorer.aclose()
        await redis.aclose()
