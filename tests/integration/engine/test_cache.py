"""ReservationCache against a real redis-server, including values written by the Go daemon."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.support.go_cache import GO_EXAMPLE
from tests.support.processes import binary, stop, wait_until
from tfgateway.engine.cache import RESERVATIONS_KEY, ReservationCache
from tfgateway.model.reservation import GoTime, Reservation, Result, ResultState, encode_cache_value
from tfgateway.store.url import connect

pytestmark = pytest.mark.integration


def _reservation(rid: str, user: str = "7") -> Reservation:
    return Reservation(
        id=rid,
        user_id=user,
        type="proxy",
        data=b'{"domain":"a.example.com","addr":"8.8.8.8","port":80,"port_tls":443}',
        created=GoTime.from_unix(1610000000),
        result=Result(type="proxy", id=rid, state=ResultState.OK, created=GoTime.from_unix(5)),
    )


async def test_put_get_exists_remove(aredis: redis.asyncio.Redis, redis_db: redis.Redis) -> None:
    cache = ReservationCache(aredis)
    r = _reservation("10-1")
    assert await cache.get("10-1") is None
    assert not await cache.exists("10-1")
    await cache.put(r)
    assert redis_db.hget(RESERVATIONS_KEY, "10-1") == encode_cache_value(r)
    got = await cache.get("10-1")
    assert got == r
    assert got is not None
    assert got.tag == {"source": "tfgateway_cache"}
    assert await cache.exists("10-1")
    assert await cache.ids() == ["10-1"]
    await cache.remove("10-1")
    await cache.remove("10-1")  # idempotent
    assert not await cache.exists("10-1")
    assert redis_db.exists(RESERVATIONS_KEY) == 0


async def test_go_daemon_entry_is_read_back(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    redis_db.hset(RESERVATIONS_KEY, "4521-1", GO_EXAMPLE)
    cache = ReservationCache(aredis)
    r = await cache.get("4521-1")
    assert r is not None
    assert (r.user_id, r.type, r.version) == ("42", "subdomain", 2)
    await cache.put(r)  # rewriting an entry the Go daemon wrote keeps its bytes
    assert redis_db.hget(RESERVATIONS_KEY, "4521-1") == GO_EXAMPLE


async def test_list_skips_and_reports_bad_entries(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    cache = ReservationCache(aredis)
    for i in range(1200):
        await cache.put(_reservation(f"{i}-1"))
    redis_db.hset(RESERVATIONS_KEY, "bad-1", b'"1.0.0"{not json')
    redis_db.hset(RESERVATIONS_KEY, "bad-2", b'"9.0.0"{}')
    redis_db.hset(RESERVATIONS_KEY, "4521-1", GO_EXAMPLE)
    reservations, bad = await cache.list()
    assert sorted(bad) == ["bad-1", "bad-2"]
    assert len(reservations) == 1201
    assert {r.id for r in reservations} >= {"0-1", "1199-1", "4521-1"}
    with pytest.raises(Exception, match="bad-1"):
        await cache.get("bad-1")


async def test_empty_cache_lists_nothing(aredis: redis.asyncio.Redis) -> None:
    assert await ReservationCache(aredis).list() == ([], [])


async def test_connect_reaches_real_redis_and_returns_bytes(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


@pytest.fixture
def unix_redis_with_password(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "r.sock"
    proc = subprocess.Popen(
        [binary("redis-server"), "--port", "0", "--unixsocket", str(sock),
         "--requirepass", "s3cret", "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(sock.exists, what="redis unix socket")
        yield sock
    finally:
        stop(proc)


async def test_connect_over_unix_socket_with_go_style_password(
    unix_redis_with_password: Path,
) -> None:
    client = connect(f"unix://s3cret@{unix_redis_with_password}")
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    wrong = connect(f"unix://wrong@{unix_redis_with_password}", retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.exceptions.RedisError, match="password"):
            await wrong.ping()
    finally:
        await wrong.aclose()
