"""A page's reads fetched in one call (`PageReads`) and the transactions that take them.

Each test holds the page path to today's single-job verdicts: the page is only a prefetch,
so whatever it holds (stale after a rival's write, after an earlier job of the same page,
lost scripts), each job ends exactly as its own transaction would have.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.dns import DNSStore, SubdomainProvisioner
from tfgateway.primitives.name_proofs import NameProofs
from tfgateway.primitives.provisioner import NameHeldError, ProvisionError
from tfgateway.primitives.proxy import ProxyProvisioner
from tfgateway.primitives.tcprouter import proxy_key
from tfgateway.store.batch import AutoPipeline
from tfgateway.store.transaction import CAS_SCRIPT, READ_SCRIPT, PageReads, page_reads
from tfgateway.store.url import connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GW = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
ZONE = "gw.example.com"


def subdomain(user: str, name: str, rid: str, ip: str = "185.69.166.1") -> Reservation:
    data = gojson.marshal({"domain": f"{name}.{ZONE}", "destination": [ip]})
    return Reservation(id=rid, user_id=user, type="subdomain", node_id=GW, data=data)


def proxy(user: str, name: str, rid: str, addr: str = "8.8.8.8") -> Reservation:
    doc = {"domain": f"{name}.{ZONE}", "addr": addr, "port": 80, "port_tls": 443}
    return Reservation(id=rid, user_id=user, type="proxy", node_id=GW, data=gojson.marshal(doc))


class Gateway:
    """The DNS and proxy primitives on one auto-pipeline, as the agent has them."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.batch = AutoPipeline(client)
        proofs = NameProofs.first_come(self.batch)
        self.dns = DNSStore(self.batch, GW, [f"ns1.{ZONE}"], proofs=proofs)
        self.subdomains = SubdomainProvisioner(self.dns)
        self.proxies = ProxyProvisioner(self.batch, GW, proofs=proofs)

    async def page(self, *rs: Reservation) -> PageReads:
        reads = []
        for r in rs:
            p = self.subdomains if r.type == "subdomain" else self.proxies
            reads += p.prefetch_reads(r)
        return await PageReads.fetch(self.batch, reads)

    async def provision(self, r: Reservation) -> None:
        p = self.subdomains if r.type == "subdomain" else self.proxies
        await p.provision(r)

    def scripts(self, script_sha: str) -> int:
        """EVALSHAs of a script sent so far (counted by the test's spy)."""
        return self.sent.count(script_sha)

    sent: list[str]


@pytest.fixture
async def gw(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    g = Gateway(aredis)
    await g.dns.setup_managed_domains([ZONE])
    for script in (READ_SCRIPT, CAS_SCRIPT):  # loaded: each use is one EVALSHA
        redis_db.script_load(script.source)
    g.sent = []
    original = AutoPipeline.submit

    def submit(self: AutoPipeline, *args: object) -> object:
        if self is g.batch and args[0] == "EVALSHA":
            g.sent.append(str(args[1]))
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AutoPipeline, "submit", submit)
    return g


@pytest.fixture
async def rival(redis_url: str) -> AsyncIterator[Gateway]:
    """Another writer (another process in real life) on its own connection."""
    client = connect(redis_url)
    yield Gateway(client)
    await client.aclose()


def route_addr(redis_db: redis.Redis, name: str) -> str:
    value = redis_db.get(proxy_key(f"{name}.{ZONE}"))
    assert value is not None
    return str(json.loads(base64.b64decode(json.loads(value)["Value"]))["addr"])


async def test_page_is_one_call_and_a_job_on_it_commits_without_reads_of_its_own(
    gw: Gateway, redis_db: redis.Redis
) -> None:
    jobs = [subdomain("42", "a", "1-1"), proxy("42", "a", "2-1"), subdomain("43", "b", "3-1")]
    page = await gw.page(*jobs)
    assert gw.scripts(READ_SCRIPT.sha) == 1
    with page_reads(page):
        for r in jobs:
            await gw.provision(r)
    # the proxy on `a` came after the subdomain of `a` (which changed what it reads): the
    # page was kept current with that write, so it committed at once as well
    assert page.hits == 3
    assert gw.scripts(READ_SCRIPT.sha) == 1
    assert gw.scripts(CAS_SCRIPT.sha) == 3
    assert redis_db.hget("managed_domains", f"a.{ZONE}") == b"42"
    assert redis_db.hget("managed_domains", f"b.{ZONE}") == b"43"
    assert route_addr(redis_db, "a") == "8.8.8.8"


async def test_two_jobs_of_one_page_on_one_name_the_second_is_refused_as_today(
    gw: Gateway, redis_db: redis.Redis, redis_url: str
) -> None:
    """User 42's subdomain, then user 7's proxy and subdomain on the same name, in one page:
    the later ones are refused with today's messages (the page read said the name was free)."""
    jobs = [subdomain("42", "app", "1-1"), proxy("7", "app", "2-1"), subdomain("7", "app", "3-1")]
    page = await gw.page(*jobs)
    with page_reads(page):
        await gw.provision(jobs[0])
        with pytest.raises(NameHeldError) as on_page_proxy:
            await gw.provision(jobs[1])
        with pytest.raises(NameHeldError) as on_page_sub:
            await gw.provision(jobs[2])
    assert redis_db.hget("managed_domains", f"app.{ZONE}") == b"42"
    assert redis_db.get(proxy_key(f"app.{ZONE}")) is None
    # today's path (no page), on a fresh database: the same refusals, word for word
    redis_db.flushall()
    client = connect(redis_url)
    try:
        today = Gateway(client)
        await today.dns.setup_managed_domains([ZONE])
        await today.provision(jobs[0])
        with pytest.raises(NameHeldError) as alone_proxy:
            await today.provision(jobs[1])
        with pytest.raises(NameHeldError) as alone_sub:
            await today.provision(jobs[2])
    finally:
        await client.aclose()
    assert str(on_page_proxy.value) == str(alone_proxy.value)
    assert str(on_page_sub.value) == str(alone_sub.value)


async def test_a_refusal_on_a_stale_page_is_decided_again_on_fresh_reads(
    gw: Gateway, rival: Gateway, redis_db: redis.Redis
) -> None:
    """The page says another user holds the name, who let it go since: the job is not refused
    on the page's word (its own transaction would have seen the name free)."""
    await rival.provision(subdomain("7", "app", "9-1"))
    page = await gw.page(subdomain("42", "app", "1-1"))
    await rival.subdomains.decommission(subdomain("7", "app", "9-1"))
    with page_reads(page):
        await gw.provision(subdomain("42", "app", "1-1"))
    assert redis_db.hget("managed_domains", f"app.{ZONE}") == b"42"
    assert gw.scripts(READ_SCRIPT.sha) == 2  # the page, then the job's own reads


async def test_a_rival_between_the_page_and_the_commits_retries_only_the_jobs_it_touched(
    gw: Gateway, rival: Gateway, redis_db: redis.Redis
) -> None:
    jobs = [subdomain("42", "app", "1-1"), proxy("43", "www", "2-1"), subdomain("44", "c", "3-1")]
    page = await gw.page(*jobs)
    await rival.provision(proxy("7", "www", "9-1", addr="8.8.4.4"))  # after the page read
    with page_reads(page):
        await gw.provision(jobs[0])
        with pytest.raises(ProvisionError, match="used by another user"):
            await gw.provision(jobs[1])
        await gw.provision(jobs[2])
    assert route_addr(redis_db, "www") == "8.8.4.4"  # one winner: the rival
    assert redis_db.hget("managed_domains", f"app.{ZONE}") == b"42"
    assert redis_db.hget("managed_domains", f"c.{ZONE}") == b"44"
    # the untouched jobs: one commit each on the page's values; the proxy: its commit refused
    # (the rival's write), then its own reads, then the refusal
    assert gw.scripts(READ_SCRIPT.sha) == 2
    assert gw.scripts(CAS_SCRIPT.sha) == 4


async def test_redis_failing_in_a_pages_commit_writes_nothing_of_that_job(
    gw: Gateway, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [subdomain("42", "a", "1-1"), subdomain("43", "b", "2-1")]
    page = await gw.page(*jobs)
    before = {k: redis_db.hgetall(k) for k in (f"{ZONE}.", "managed_domains")}
    original = AutoPipeline.eval
    failing = True

    async def eval_(self: AutoPipeline, script: object, keys: object, args: object) -> object:
        if failing and script is CAS_SCRIPT:
            raise redis.exceptions.ConnectionError("redis went away (test)")
        return await original(self, script, keys, args)  # type: ignore[arg-type]

    monkeypatch.setattr(AutoPipeline, "eval", eval_)
    with page_reads(page):
        for r in jobs:
            with pytest.raises(ProvisionError) as failed:
                await gw.provision(r)
            assert isinstance(failed.value.__cause__, redis.exceptions.ConnectionError)
    assert {k: redis_db.hgetall(k) for k in before} == before  # nothing half-written
    failing = False
    with page_reads(page):  # the retry (same page values, still current): both written
        for r in jobs:
            await gw.provision(r)
    assert redis_db.hget("managed_domains", f"a.{ZONE}") == b"42"
    assert redis_db.hget("managed_domains", f"b.{ZONE}") == b"43"


async def test_scripts_lost_after_the_page_are_loaded_again(
    gw: Gateway, redis_db: redis.Redis
) -> None:
    """NOSCRIPT mid-page (redis restarted or flushed its scripts between the page's read and
    its commits): each commit loads its script again and the page goes on."""
    jobs = [subdomain("42", "a", "1-1"), proxy("42", "a", "2-1")]
    page = await gw.page(*jobs)
    redis_db.script_flush()
    with page_reads(page):
        for r in jobs:
            await gw.provision(r)
    assert page.hits == 2
    assert route_addr(redis_db, "a") == "8.8.8.8"
    redis_db.script_flush()  # and before the page's read
    page = await gw.page(subdomain("43", "b", "3-1"))
    assert len(page) > 0
    with page_reads(page):
        await gw.provision(subdomain("43", "b", "3-1"))
    assert redis_db.hget("managed_domains", f"b.{ZONE}") == b"43"


async def test_page_values_follow_every_write_a_commit_makes(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    """The page's copy after SET, DEL, HSET and HDEL equals a fresh read of redis."""
    batch = AutoPipeline(aredis)
    redis_db.set("k", b"old")
    redis_db.hset("h", mapping={"f": b"1", "g": b"2"})
    reads = [("get", "k"), ("hget", "h", "f"), ("hmget", "h", "f", "g", "x"), ("get", "gone")]
    page = await PageReads.fetch(batch, reads)
    writes: list[tuple[str | bytes | int | float, ...]] = [
        ("SET", "k", "new"),
        ("HSET", "h", "x", b"3"),
        ("HDEL", "h", "f"),
        ("SET", "gone", 5),
        ("PUBLISH", "k", "x"),
    ]
    for op, *args in writes:
        redis_db.execute_command(op, *args)
    page.written(writes)
    fresh = await PageReads.fetch(batch, reads)
    assert page.take(reads) == fresh.take(reads)
    redis_db.delete("h")
    page.written([("DEL", "h")])
    fresh = await PageReads.fetch(batch, reads)
    assert page.take(reads) == fresh.take(reads)
    page.written([("HSET", "k", "f", "v")])  # not a model of redis (WRONGTYPE): dropped
    assert page.take([("get", "k")]) is None
    assert page.take([("hget", "h", "f")]) == [[None]]
