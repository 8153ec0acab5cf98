"""Ownership checks whose reads are prefetched in one round trip stay race-free.

`PrefetchedReads` fetches a WATCH transaction's reads together, on another connection, after
the keys are watched. These tests land a rival's write exactly between that prefetch and EXEC
(the widest window it has) and check the transaction is retried and sees the rival: the name
stays the rival's, nothing of the loser is written.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis
import redis.asyncio
from tfgateway import gojson
from tfgateway.dns import (
    DNSStore,
    PrefetchedReads,
    Read,
    SubdomainProvisioner,
    record_set_value,
)
from tfgateway.provisioner import ProvisionError
from tfgateway.proxy import ProxyProvisioner, proxy_key
from tfgateway.redisurl import connect
from tfgateway.reservation import Reservation

pytestmark = pytest.mark.integration

GW = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
ZONE = "gw.example.com"


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def rival_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A second client: the rival is another writer (another process in real life)."""
    client = connect(redis_url)
    yield client
    await client.aclose()


def subdomain(user: str, domain: str, ip: str, rid: str) -> Reservation:
    data = gojson.marshal({"domain": domain, "destination": [ip]})
    return Reservation(id=rid, user_id=user, type="subdomain", node_id=GW, data=data)


def proxy(user: str, domain: str, addr: str, rid: str) -> Reservation:
    data = gojson.marshal({"domain": domain, "addr": addr, "port": 80, "port_tls": 443})
    return Reservation(id=rid, user_id=user, type="proxy", node_id=GW, data=data)


def rival_after_prefetch(monkeypatch: pytest.MonkeyPatch, rival: Any) -> list[int]:
    """Run `rival()` once, right after the first prefetch; returns the prefetch count."""
    calls: list[int] = []
    original = PrefetchedReads.fetch.__func__  # type: ignore[attr-defined]

    async def fetch(
        cls: type[PrefetchedReads], client: Any, pipe: Any, watched: Any, reads: Sequence[Read]
    ) -> PrefetchedReads:
        result: PrefetchedReads = await original(cls, client, pipe, watched, reads)
        calls.append(1)
        if len(calls) == 1:
            await rival()
        return result

    monkeypatch.setattr(PrefetchedReads, "fetch", classmethod(fetch))
    return calls


async def test_subdomain_claimed_between_prefetch_and_exec(
    aredis: redis.asyncio.Redis,
    rival_redis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = DNSStore(aredis, GW, ["ns1.gw.example.com"])
    await store.setup_managed_domains([ZONE])
    sub = SubdomainProvisioner(store)
    rival = SubdomainProvisioner(DNSStore(rival_redis, GW, ["ns1.gw.example.com"]))

    async def rival_claims() -> None:
        await rival.provision(subdomain("7", f"app.{ZONE}", "1.1.1.1", "9-1"))

    calls = rival_after_prefetch(monkeypatch, rival_claims)
    with pytest.raises(ProvisionError, match="already reserved by another user"):
        await sub.provision(subdomain("42", f"app.{ZONE}", "185.69.166.1", "5-1"))
    assert len(calls) >= 3  # ours, the rival's, ours again after the aborted EXEC
    assert redis_db.hget("managed_domains", f"app.{ZONE}") == b"7"
    record = redis_db.hget(f"{ZONE}.", "app")
    assert record is not None
    assert b"1.1.1.1" in record
    assert b"185.69.166.1" not in record


async def test_record_set_changed_between_prefetch_and_exec_is_merged(
    aredis: redis.asyncio.Redis,
    rival_redis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record set is prefetched too: a write to it meanwhile (here only to the zone hash,
    as another writer of the same user's records would) must not be overwritten."""
    store = DNSStore(aredis, GW, ["ns1.gw.example.com"])
    await store.setup_managed_domains([ZONE])
    sub = SubdomainProvisioner(store)

    async def same_user_adds() -> None:
        value = record_set_value({"a": [{"ip": "1.1.1.1", "ttl": 3600}]})
        await rival_redis.hset(f"{ZONE}.", "app", value)

    rival_after_prefetch(monkeypatch, same_user_adds)
    await sub.provision(subdomain("42", f"app.{ZONE}", "185.69.166.1", "5-1"))
    record = redis_db.hget(f"{ZONE}.", "app")
    assert record is not None
    assert b"1.1.1.1" in record
    assert b"185.69.166.1" in record


async def test_proxy_taken_between_prefetch_and_exec(
    aredis: redis.asyncio.Redis,
    rival_redis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prov = ProxyProvisioner(aredis, GW)
    rival = ProxyProvisioner(rival_redis, GW)

    async def rival_takes() -> None:
        await rival.provision(proxy("7", "www.example.com", "8.8.4.4", "9-1"))

    calls = rival_after_prefetch(monkeypatch, rival_takes)
    with pytest.raises(ProvisionError, match="used by another user"):
        await prov.provision(proxy("42", "www.example.com", "8.8.8.8", "5-1"))
    assert len(calls) >= 3
    value = redis_db.get(proxy_key("www.example.com"))
    assert value is not None
    assert json.loads(base64.b64decode(json.loads(value)["Value"]))["addr"] == "8.8.4.4"


async def test_prefetch_refuses_unwatched_keys() -> None:
    """A read of a key that is not watched would not be race-free: refused loudly."""
    with pytest.raises(ValueError, match="not watched"):
        await PrefetchedReads.fetch(None, None, ["a"], [("get", "b")])
