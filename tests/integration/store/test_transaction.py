"""Optimistic transactions (redistxn) and the auto-pipeline (redisbatch) on a real redis.

The race tests land a rival's write exactly between a transaction's reads and its commit (the
widest window it has) and check the commit is refused and the body runs again and sees the
rival: the name stays the rival's, nothing of the loser is written.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
import redis.asyncio
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.exceptions import RedisError, ResponseError

from tests.support.redis_server import RedisServer
from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.coredns_redis import record_set_value
from tfgateway.primitives.dns import DNSStore, SubdomainProvisioner
from tfgateway.primitives.name_proofs import NameProofs
from tfgateway.primitives.provisioner import ProvisionError
from tfgateway.primitives.proxy import ProxyProvisioner
from tfgateway.primitives.tcprouter import proxy_key
from tfgateway.store.batch import AutoPipeline, LuaScript
from tfgateway.store.transaction import (
    CAS_SCRIPT,
    READ_SCRIPT,
    Transaction,
    TransactionConflictError,
    run_transaction,
)
from tfgateway.store.url import connect

pytestmark = pytest.mark.integration

GW = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
ZONE = "gw.example.com"


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


def rival_before_commit(
    monkeypatch: pytest.MonkeyPatch, rival: Callable[[], Awaitable[None]]
) -> list[int]:
    """Run `rival()` once, right before the first commit; returns the commit count."""
    calls: list[int] = []
    original = Transaction.commit

    async def commit(self: Transaction) -> bool:
        calls.append(1)
        if len(calls) == 1:
            await rival()
        return await original(self)

    monkeypatch.setattr(Transaction, "commit", commit)
    return calls


async def test_subdomain_claimed_between_read_and_commit(
    aredis: redis.asyncio.Redis,
    rival_redis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = DNSStore(aredis, GW, ["ns1.gw.example.com"], proofs=NameProofs.first_come(aredis))
    await store.setup_managed_domains([ZONE])
    sub = SubdomainProvisioner(store)
    rival = SubdomainProvisioner(
        DNSStore(rival_redis, GW, ["ns1.gw.example.com"], proofs=NameProofs.first_come(rival_redis))
    )

    async def rival_claims() -> None:
        await rival.provision(subdomain("7", f"app.{ZONE}", "1.1.1.1", "9-1"))

    calls = rival_before_commit(monkeypatch, rival_claims)
    with pytest.raises(ProvisionError, match="already reserved by another user"):
        await sub.provision(subdomain("42", f"app.{ZONE}", "185.69.166.1", "5-1"))
    assert len(calls) == 2  # ours (refused by the script), the rival's; then ours is refused
    assert redis_db.hget("managed_domains", f"app.{ZONE}") == b"7"
    record = redis_db.hget(f"{ZONE}.", "app")
    assert record is not None
    assert b"1.1.1.1" in record
    assert b"185.69.166.1" not in record


async def test_record_set_changed_between_read_and_commit_is_merged(
    aredis: redis.asyncio.Redis,
    rival_redis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write to the record set meanwhile (another writer of the same user's records) must
    not be overwritten: the commit is refused and the merge is done again."""
    store = DNSStore(aredis, GW, ["ns1.gw.example.com"], proofs=NameProofs.first_come(aredis))
    await store.setup_managed_domains([ZONE])
    sub = SubdomainProvisioner(store)

    async def same_user_adds() -> None:
        value = record_set_value({"a": [{"ip": "1.1.1.1", "ttl": 3600}]})
        await rival_redis.hset(f"{ZONE}.", "app", value)

    rival_before_commit(monkeypatch, same_user_adds)
    await sub.provision(subdomain("42", f"app.{ZONE}", "185.69.166.1", "5-1"))
    record = redis_db.hget(f"{ZONE}.", "app")
    assert record is not None
    assert b"1.1.1.1" in record
    assert b"185.69.166.1" in record


async def test_proxy_taken_between_read_and_commit(
    aredis: redis.asyncio.Redis,
    rival_redis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prov = ProxyProvisioner(aredis, GW, proofs=NameProofs.first_come(aredis))
    rival = ProxyProvisioner(rival_redis, GW, proofs=NameProofs.first_come(rival_redis))

    async def rival_takes() -> None:
        await rival.provision(proxy("7", "www.example.com", "8.8.4.4", "9-1"))

    calls = rival_before_commit(monkeypatch, rival_takes)
    with pytest.raises(ProvisionError, match="used by another user"):
        await prov.provision(proxy("42", "www.example.com", "8.8.8.8", "5-1"))
    assert len(calls) == 2
    value = redis_db.get(proxy_key("www.example.com"))
    assert value is not None
    assert json.loads(base64.b64decode(json.loads(value)["Value"]))["addr"] == "8.8.4.4"


async def test_concurrent_subdomains_of_one_zone_never_conflict(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks are per hash field: 200 names of one zone written concurrently commit on the
    first attempt (WATCH on the zone hash made every pair of them conflict), in few pipelines."""
    batch = AutoPipeline(aredis)
    store = DNSStore(batch, GW, ["ns1.gw.example.com"], proofs=NameProofs.first_come(batch))
    await store.setup_managed_domains([ZONE])
    sub = SubdomainProvisioner(store)
    commits: list[bool] = []
    original = Transaction.commit

    async def commit(self: Transaction) -> bool:
        ok = await original(self)
        commits.append(ok)
        return ok

    monkeypatch.setattr(Transaction, "commit", commit)
    before = batch.pipelines
    await asyncio.gather(
        *(
            sub.provision(subdomain(str(i), f"n{i}.{ZONE}", "185.69.166.1", f"{i}-1"))
            for i in range(200)
        )
    )
    assert commits == [True] * 200
    assert batch.pipelines - before <= 5  # reads, then the scripts: not one per name
    assert redis_db.hlen(f"{ZONE}.") == 200 + 2  # the names, `@` and `__owner__`
    assert redis_db.hlen("managed_domains") == 200


async def test_racing_users_on_one_name_have_exactly_one_winner(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    store = DNSStore(
        AutoPipeline(aredis),
        GW,
        ["ns1.gw.example.com"],
        proofs=NameProofs.first_come(AutoPipeline(aredis)),
    )
    await store.setup_managed_domains([ZONE])
    sub = SubdomainProvisioner(store)
    outcomes = await asyncio.gather(
        *(
            sub.provision(subdomain(str(u), f"app.{ZONE}", f"185.69.166.{u}", f"{u}-1"))
            for u in range(1, 21)
        ),
        return_exceptions=True,
    )
    winners = [u for u, o in zip(range(1, 21), outcomes, strict=True) if o is None]
    assert len(winners) == 1
    assert all(isinstance(o, ProvisionError) for o in outcomes if o is not None)
    assert redis_db.hget("managed_domains", f"app.{ZONE}") == str(winners[0]).encode()
    record = json.loads(redis_db.hget(f"{ZONE}.", "app") or b"{}")
    assert [e["ip"] for e in record["a"]] == [f"185.69.166.{winners[0]}"]


@pytest.mark.parametrize(
    "rival",
    [
        pytest.param(lambda r: r.hset("h", "f", b"\x00\xffchanged"), id="field changed"),
        pytest.param(lambda r: r.hdel("h", "f"), id="field removed"),
        pytest.param(lambda r: r.hset("h", "absent", b"now here"), id="absent field added"),
        pytest.param(lambda r: r.set("k", b"other"), id="key changed"),
        pytest.param(lambda r: r.set("nokey", b""), id="absent key added (empty value)"),
        pytest.param(lambda r: r.hset("whole", "new", b"x"), id="whole hash grew"),
        pytest.param(lambda r: r.hset("whole", "a", b"2"), id="whole hash field changed"),
    ],
)
async def test_every_kind_of_read_is_checked(
    aredis: redis.asyncio.Redis,
    rival_redis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    rival: Callable[[redis.asyncio.Redis], Awaitable[object]],
) -> None:
    redis_db.hset("h", "f", b"\x00\xff binary \r\n")
    redis_db.set("k", b"value")
    redis_db.hset("whole", mapping={"a": b"1", "b": b""})
    txn = Transaction(AutoPipeline(aredis))
    assert await txn.hget("h", "f") == b"\x00\xff binary \r\n"
    assert await txn.hmget("h", ["absent"]) == [None]
    assert await txn.get("k") == b"value"
    assert await txn.get("nokey") is None
    assert await txn.hgetall("whole") == {b"a": b"1", b"b": b""}
    txn.set("written", b"yes")
    assert await txn.commit() is True  # nothing changed: applied
    assert redis_db.get("written") == b"yes"
    redis_db.delete("written")
    await rival(rival_redis)
    assert await txn.commit() is False  # the same reads, now stale: nothing applied
    assert redis_db.get("written") is None


async def test_writes_are_applied_in_order_and_binary_safe(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    txn = Transaction(AutoPipeline(aredis))
    await txn.hget("h", "f")
    txn.hset("h", "f", b"\x00first")
    txn.hset("h", "f", b"\xffsecond")
    txn.hdel("h")  # no fields: nothing queued
    txn.set("k", b"v")
    txn.delete("k")
    txn.publish("chan", b"msg")
    assert await txn.commit()
    assert redis_db.hget("h", "f") == b"\xffsecond"
    assert redis_db.exists("k") == 0


async def test_script_refuses_commands_outside_its_list(aredis: redis.asyncio.Redis) -> None:
    batch = AutoPipeline(aredis)
    with pytest.raises(ResponseError, match="not allowed"):
        await batch.eval(CAS_SCRIPT, [], [0, "FLUSHALL", 0])


async def test_conflict_forever_is_an_error(
    aredis: redis.asyncio.Redis, rival_redis: redis.asyncio.Redis
) -> None:
    async def body(txn: Transaction) -> None:
        await txn.get("k")
        await rival_redis.incr("k")  # every attempt sees its read changed
        txn.set("other", b"1")

    with pytest.raises(TransactionConflictError):
        await run_transaction(AutoPipeline(aredis), body, attempts=3)
    assert await rival_redis.get("k") == b"3"
    assert await rival_redis.get("other") is None


async def test_auto_pipeline_coalesces_and_keeps_errors_per_command(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    redis_db.set("string", b"x")
    batch = AutoPipeline(aredis)
    results = await asyncio.gather(
        *(batch.execute("SET", f"key{i}", i) for i in range(300)),
        batch.hget("string", "f"),  # WRONGTYPE: fails alone
        *(batch.get(f"key{i}") for i in range(300)),
        return_exceptions=True,
    )
    assert isinstance(results[300], ResponseError)
    assert list(results[301:]) == [str(i).encode() for i in range(300)]
    assert batch.commands == 601
    assert batch.pipelines <= 2


async def test_auto_pipeline_splits_large_batches(aredis: redis.asyncio.Redis) -> None:
    batch = AutoPipeline(aredis, max_batch=100)
    await asyncio.gather(*(batch.execute("PING") for i in range(250)))
    assert batch.pipelines == 3


async def test_script_is_loaded_again_after_script_flush(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    batch = AutoPipeline(aredis)
    script = LuaScript("return ARGV[1] .. '!'")
    assert await batch.eval(script, [], ["a"]) == b"a!"
    redis_db.script_flush()
    assert await batch.eval(script, [], ["b"]) == b"b!"


async def test_a_lost_connection_fails_every_command_of_its_pipeline() -> None:
    client = redis.asyncio.Redis(port=1, socket_connect_timeout=1.0)  # nothing listens there
    batch = AutoPipeline(client)
    try:
        results = await asyncio.gather(
            *(batch.execute("PING") for _ in range(3)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert all(isinstance(r, RedisError) for r in results)
    assert len({id(r) for r in results}) == 3  # one exception object each


async def test_a_cancelled_command_does_not_disturb_the_others(
    aredis: redis.asyncio.Redis,
) -> None:
    batch = AutoPipeline(aredis)
    doomed = asyncio.ensure_future(batch.execute("SET", "a", 1))
    kept = asyncio.ensure_future(batch.execute("SET", "b", 2))
    doomed.cancel()
    assert await kept == b"OK"
    assert await aredis.get("a") is None


async def test_a_redis_that_stops_answering_fails_the_pipeline_after_its_timeout() -> None:
    """A peer that accepts and reads but never answers must not hang the agent's writers."""
    received = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            received.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis.asyncio.Redis(port=port, protocol=2, socket_connect_timeout=1.0)
    batch = AutoPipeline(client, timeout=0.5)
    try:
        async with asyncio.timeout(10):
            results = await asyncio.gather(
                batch.execute("SET", "a", 1), batch.get("a"), return_exceptions=True
            )
    finally:
        await client.aclose()
        server.close()
    assert received.is_set()
    assert all(isinstance(r, RedisError) for r in results), results


@pytest.mark.parametrize("protocol", [2, 3])
async def test_replies_are_the_same_over_resp2_and_resp3(
    redis_url: str, redis_db: redis.Redis, protocol: int
) -> None:
    """The agent's client speaks RESP3; a redis without it (RESP2) must give the same values."""
    redis_db.hset("h", mapping={"a": b"1", "b": b"\x00"})
    client = connect(redis_url, protocol=protocol)
    batch = AutoPipeline(client)
    try:
        assert await batch.hgetall("h") == {b"a": b"1", b"b": b"\x00"}
        assert await batch.hgetall("missing") == {}
        assert await batch.hmget("h", ["a", "zz"]) == [b"1", None]
        assert await batch.hget("h", "b") == b"\x00"
        assert await batch.hset("h", "c", b"3") == 1
    finally:
        await client.aclose()


async def test_a_field_read_before_its_whole_hash_is_still_checked(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    """A decision may rest on a field read first; if it changed before the whole hash was read,
    the whole-hash snapshot matches redis but the decision does not: no commit."""
    redis_db.hset("h", "f", b"first")
    txn = Transaction(AutoPipeline(aredis))
    assert await txn.hget("h", "f") == b"first"
    redis_db.hset("h", "f", b"second")
    assert await txn.hgetall("h") == {b"f": b"second"}
    txn.set("written", b"yes")
    assert await txn.commit() is False
    assert redis_db.get("written") is None


async def test_prefetch_is_one_command_with_every_read_in_order(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    """The prefetch travels as one script call (`READ_SCRIPT`) and records what each read
    would have returned: values binary-safe, absent keys and fields as None; the commit then
    checks them like reads made one by one."""
    redis_db.hset("h", mapping={"f": b"\x00\xff\r\n", "g": b""})
    redis_db.set("k", b"value \x00")
    redis_db.script_load(READ_SCRIPT.source)  # else the first call is EVALSHA, LOAD, EVALSHA
    batch = AutoPipeline(aredis)
    txn = Transaction(batch)
    before = batch.commands
    await txn.prefetch(
        [("hget", "h", "f"), ("get", "k"), ("get", "nokey"), ("hmget", "h", "absent", "g"),
         ("hmget", "nohash", "x")]
    )  # fmt: skip
    assert batch.commands - before == 1
    assert await txn.hget("h", "f") == b"\x00\xff\r\n"
    assert await txn.hmget("h", ["g", "absent"]) == [b"", None]
    assert await txn.get("k") == b"value \x00"
    assert await txn.get("nokey") is None
    assert await txn.hget("nohash", "x") is None
    assert batch.commands - before == 1  # every read above came from the prefetch
    txn.set("written", b"yes")
    assert await txn.commit() is True
    redis_db.delete("written")
    redis_db.hset("nohash", "x", b"now here")  # a read of the prefetch went stale
    assert await txn.commit() is False
    assert redis_db.get("written") is None


async def test_prefetch_error_and_script_cache_loss(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    """A read redis refuses fails the prefetch (nothing recorded); after redis forgot its
    scripts (a restart, SCRIPT FLUSH) the prefetch loads the script again and works."""
    redis_db.set("string", b"x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await Transaction(AutoPipeline(aredis)).prefetch([("get", "k"), ("hget", "string", "f")])
    redis_db.script_flush()
    redis_db.set("k", b"v")
    txn = Transaction(AutoPipeline(aredis))
    await txn.prefetch([("get", "k")])
    assert await txn.get("k") == b"v"
    assert redis_db.script_exists(READ_SCRIPT.sha) == [True]


async def test_auto_pipeline_reads_replies_from_hiredis_across_socket_reads(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    """The pipeline reads its replies straight from the connection's hiredis reader (the
    agent's connections use it): replies larger than one socket read (64 KiB), nested ones,
    errors and nil keep their place."""
    pool = aredis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        assert type(conn._parser) is _AsyncHiredisParser
    finally:
        await pool.release(conn)
    big = bytes(range(256)) * 4096  # 1 MiB
    redis_db.set("big", big)
    redis_db.set("string", b"x")
    redis_db.hset("h", mapping={"a": b"1"})
    batch = AutoPipeline(aredis)
    results = await asyncio.gather(
        *(batch.get("big") for _ in range(3)),
        batch.hmget("h", ["a", "absent"]),
        batch.hget("string", "f"),
        batch.get("absent"),
        batch.execute("EVAL", "return {1, 'two', {false}}", 0),
        return_exceptions=True,
    )
    assert results[:3] == [big, big, big]
    assert results[3] == [b"1", None]
    assert isinstance(results[4], ResponseError)
    assert "WRONGTYPE" in str(results[4])
    assert results[5] is None
    assert results[6] == [1, b"two", [None]]
    assert batch.pipelines == 1


async def test_prefetch_reads_absent_values_as_none_over_resp3(
    redis_server: RedisServer, redis_db: redis.Redis
) -> None:
    """Over RESP3 a Lua `false` at the top of a reply would be a boolean; inside the read
    script's reply table an absent key or field is still nil, so None, as over RESP2."""
    redis_db.set("k", b"v")
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, protocol=3)
    try:
        txn = Transaction(AutoPipeline(client))
        await txn.prefetch([("get", "nokey"), ("hmget", "nohash", "a", "b"), ("get", "k")])
        assert await txn.get("nokey") is None
        assert await txn.hmget("nohash", ["a", "b"]) == [None, None]
        assert await txn.get("k") == b"v"
    finally:
        await client.aclose()
