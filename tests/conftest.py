"""Fixtures shared by every suite."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from tests.support.redis_server import RedisServer
from tests.support.world_dns import WorldDNS
from tfgateway.store.url import connect

_labels = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server per test session; tests get it flushed via `redis_db`."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def world_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldDNS]:
    """The Internet's DNS as proof-of-control lookups see it (coredns-tfgw on a redis of its
    own, on loopback): tests publish name owners' records there, never on the Internet."""
    with WorldDNS(tmp_path_factory.mktemp("world-dns")) as world:
        yield world


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A synchronous client on an empty database."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def redis_url(redis_server: RedisServer, redis_db: redis.Redis) -> str:
    """URL (agent syntax, tcp://host:port) of an empty database."""
    return redis_server.url


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client (the agent's) on the same empty database."""
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def label(request: pytest.FixtureRequest) -> str:
    """A DNS label unique to this test (its name, parameters included, and a counter), so tests
    sharing a gateway never share names."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-").lower()
    return f"{name.removeprefix('test-')[:40]}-{next(_labels)}"
