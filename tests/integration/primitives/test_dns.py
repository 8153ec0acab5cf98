"""DNS primitive against a real redis-server: Go-daemon bytes, apex SOA/NS, ownership, idempotency.

The last test serves what the agent wrote through the project's CoreDNS (gatewaydns plugin)
and asks it with dnspython, so the layout is checked by the real reader too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tests.support.processes import binary, free_port, port_open, wait_until
from tests.support.redis_server import snapshot
from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.coredns_redis import DNS_CHANNEL
from tfgateway.primitives.dns import DelegateProvisioner, DNSStore, SubdomainProvisioner
from tfgateway.primitives.name_proofs import NameProofs
from tfgateway.primitives.provisioner import ProvisionError
from tfgateway.store.url import connect

pytestmark = pytest.mark.integration

GW = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
NAMESERVERS = ["ns1.gateway.example.com", "ns2.gateway.example.com."]


@pytest.fixture
async def store(aredis: redis.asyncio.Redis) -> DNSStore:
    s = DNSStore(aredis, GW, NAMESERVERS, proofs=NameProofs.first_come(aredis))
    await s.setup_managed_domains(["Gateway.Example.com."])
    return s


def subdomain(user: str, domain: str, ips: list[Any], rid: str = "1-1") -> Reservation:
    data = gojson.marshal({"domain": domain, "destination": ips})
    return Reservation(id=rid, user_id=user, type="subdomain", node_id=GW, data=data)


def delegate(user: str, domain: str, rid: str = "2-1") -> Reservation:
    data = gojson.marshal({"domain": domain})
    return Reservation(id=rid, user_id=user, type="domain_delegate", node_id=GW, data=data)


APEX = (
    b'{"ns":[{"host":"ns1.gateway.example.com.","ttl":3600},'
    b'{"host":"ns2.gateway.example.com.","ttl":3600}],'
    b'"soa":{"ns":"ns1.gateway.example.com.","MBox":"hostmaster.%s.","refresh":7200,'
    b'"retry":1800,"expire":1209600,"minttl":300,"ttl":3600}}'
)


async def test_managed_domain_layout(store: DNSStore, redis_db: redis.Redis) -> None:
    assert redis_db.hget("zone", "gateway.example.com") == b'{"Owner":"%s"}' % GW.encode()
    owner_txt = redis_db.hget("gateway.example.com.", "__owner__")
    assert owner_txt == (
        b'{"txt":[{"text":"{\\"identity\\":\\"%s\\",\\"owner\\":\\"%s\\"}","ttl":600}]}'
        % (GW.encode(), GW.encode())
    )
    assert redis_db.hget("gateway.example.com.", "@") == APEX % b"gateway.example.com"
    before = snapshot(redis_db)
    await store.setup_managed_domains(["gateway.example.com"])  # idempotent
    assert snapshot(redis_db) == before


async def test_subdomain_bytes_owner_and_publish(
    store: DNSStore, aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    pubsub = aredis.pubsub()
    await pubsub.subscribe(DNS_CHANNEL)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    prov = SubdomainProvisioner(store)
    r = subdomain("42", "App.Gateway.Example.com", ["185.69.166.1", "2a02:1802:5e:0::1"])
    assert await prov.provision(r) is None
    assert redis_db.hget("gateway.example.com.", "app") == (
        b'{"a":[{"ip":"185.69.166.1","ttl":3600}],"aaaa":[{"ip":"2a02:1802:5e::1","ttl":3600}]}'
    )
    assert redis_db.hget("managed_domains", "app.gateway.example.com") == b"42"
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert msg is not None
    assert msg["data"] == b"gateway.example.com."
    await pubsub.aclose()  # type: ignore[no-untyped-call]

    before = snapshot(redis_db)
    await prov.provision(r)  # idempotent
    assert snapshot(redis_db) == before

    await prov.decommission(r)
    assert redis_db.hget("gateway.example.com.", "app") is None
    assert redis_db.hget("managed_domains", "app.gateway.example.com") is None
    after = snapshot(redis_db)
    await prov.decommission(r)  # idempotent
    assert snapshot(redis_db) == after


async def test_subdomain_takeover_is_refused(store: DNSStore, redis_db: redis.Redis) -> None:
    prov = SubdomainProvisioner(store)
    await prov.provision(subdomain("42", "app.gateway.example.com", ["185.69.166.1"]))
    before = snapshot(redis_db)
    with pytest.raises(ProvisionError, match="already reserved by another user"):
        await prov.provision(subdomain("99", "app.gateway.example.com", ["6.6.6.6"], "9-1"))
    # the other user's decommission of the same name (with A's very IPs) changes nothing
    await prov.decommission(subdomain("99", "app.gateway.example.com", ["185.69.166.1"], "9-1"))
    await prov.decommission(subdomain("99", "APP.gateway.example.com.", [], "9-1"))
    assert snapshot(redis_db) == before


@pytest.mark.parametrize(
    ("domain", "ips", "message"),
    [
        ("other.example.net", ["1.1.1.1"], "not managed by this gateway"),
        ("gateway.example.com", ["1.1.1.1"], "exactly one label"),
        ("a.b.gateway.example.com", ["1.1.1.1"], "exactly one label"),
        ("*.gateway.example.com", ["1.1.1.1"], "wildcards"),
        ("_x.gateway.example.com", ["1.1.1.1"], "underscores"),
        ("bücher.gateway.example.com", ["1.1.1.1"], "punycode"),
        ("x.gateway.example.com", [], "at least one"),
        ("x.gateway.example.com", ["not-an-ip"], "not an IP address"),
        ("x.gateway.example.com", ["0.0.0.0"], "unspecified"),
        ("x.gateway.example.com", ["224.0.0.1"], "multicast"),
        ("", ["1.1.1.1"], "cannot be empty"),
    ],
)
async def test_bad_subdomains_are_refused_cleanly(
    store: DNSStore, redis_db: redis.Redis, domain: str, ips: list[str], message: str
) -> None:
    before = snapshot(redis_db)
    with pytest.raises(ProvisionError, match=message):
        await SubdomainProvisioner(store).provision(subdomain("42", domain, ips))
    assert snapshot(redis_db) == before


@pytest.mark.parametrize("data", [b"not json", b"[]", b"null", b'{"domain":5}', b""])
async def test_malformed_data_is_a_provision_error(
    store: DNSStore, redis_db: redis.Redis, data: bytes
) -> None:
    before = snapshot(redis_db)
    for prov in (SubdomainProvisioner(store), DelegateProvisioner(store)):
        r = Reservation(id="1-1", user_id="42", type="x", data=data)
        with pytest.raises(ProvisionError):
            await prov.provision(r)
        with contextlib.suppress(ProvisionError):
            await prov.decommission(r)
    assert snapshot(redis_db) == before


async def test_delegation_layout_apex_and_removal(store: DNSStore, redis_db: redis.Redis) -> None:
    prov = DelegateProvisioner(store)
    r = delegate("42", "Example.ORG")
    await prov.provision(r)
    assert redis_db.hget("zone", "example.org") == b'{"Owner":"42"}'
    assert redis_db.hget("example.org.", "__owner__") == (
        b'{"txt":[{"text":"{\\"identity\\":\\"%s\\",\\"owner\\":\\"42\\"}","ttl":600}]}'
        % GW.encode()
    )
    assert redis_db.hget("example.org.", "@") == APEX % b"example.org"
    before = snapshot(redis_db)
    await prov.provision(r)
    assert snapshot(redis_db) == before

    # the owner may name anything in its zone, the apex too (A next to SOA/NS)
    sub = SubdomainProvisioner(store)
    await sub.provision(subdomain("42", "www.example.org", ["1.2.3.4"], "3-1"))
    await sub.provision(subdomain("42", "a.b.example.org", ["2001:db8::1"], "3-2"))
    await sub.provision(subdomain("42", "example.org", ["1.2.3.5"], "3-3"))
    assert redis_db.hget("example.org.", "www") == b'{"a":[{"ip":"1.2.3.4","ttl":3600}]}'
    assert redis_db.hget("example.org.", "a.b") == b'{"aaaa":[{"ip":"2001:db8::1","ttl":3600}]}'
    apex = json.loads(redis_db.hget("example.org.", "@") or b"")
    assert list(apex) == ["a", "ns", "soa"]
    assert apex["a"] == [{"ip": "1.2.3.5", "ttl": 3600}]
    await sub.decommission(subdomain("42", "example.org", ["1.2.3.5"], "3-3"))
    assert redis_db.hget("example.org.", "@") == APEX % b"example.org"

    # removal deletes the zone hash itself (upstream deleted the dotless key) and its names
    await prov.decommission(r)
    assert redis_db.exists("example.org.") == 0
    assert redis_db.hget("zone", "example.org") is None
    assert redis_db.hget("managed_domains", "www.example.org") is None
    assert redis_db.hget("managed_domains", "a.b.example.org") is None
    await prov.decommission(r)  # idempotent


async def test_delegation_ownership(store: DNSStore, redis_db: redis.Redis) -> None:
    prov = DelegateProvisioner(store)
    await prov.provision(delegate("42", "example.org"))
    await SubdomainProvisioner(store).provision(subdomain("42", "www.example.org", ["1.2.3.4"]))
    before = snapshot(redis_db)
    refusals = [
        (delegate("99", "example.org"), "owned by another user"),
        (delegate("99", "sub.example.org"), "inside example.org"),
        (delegate("99", "gateway.example.com"), "managed by this gateway"),
        (delegate("99", "x.gateway.example.com"), "inside gateway.example.com"),
        (delegate("99", "example.com"), "nameserver of this gateway"),
        (delegate("99", "ns1.gateway.example.com"), "nameserver of this gateway"),
        (subdomain("99", "ns2.gateway.example.com", ["6.6.6.6"]), "nameserver of this gateway"),
        (subdomain("42", "ns1.gateway.example.com", ["6.6.6.6"]), "nameserver of this gateway"),
        (subdomain("99", "evil.example.org", ["6.6.6.6"]), "belongs to another user"),
        (subdomain("99", "www.example.org", ["6.6.6.6"]), "another user"),
        (subdomain("99", "example.org", ["6.6.6.6"]), "another user"),
    ]
    for r, message in refusals:
        p = (
            DelegateProvisioner(store)
            if r.type == "domain_delegate"
            else SubdomainProvisioner(store)
        )
        with pytest.raises(ProvisionError, match=message):
            await p.provision(r)
    # a zone around another user's zone (here: around the gateway's managed domain)
    plain = DNSStore(store._redis, GW, [], proofs=NameProofs.first_come(store._redis))
    with pytest.raises(ProvisionError, match="inside it belongs"):
        await DelegateProvisioner(plain).provision(delegate("99", "example.com"))
    # another user's decommissions leave everything as it was
    await prov.decommission(delegate("99", "example.org"))
    await prov.decommission(delegate("99", "gateway.example.com"))
    await SubdomainProvisioner(store).decommission(subdomain("99", "www.example.org", []))
    assert snapshot(redis_db) == before
    # the same user may nest a zone in its own zone; removing the outer one keeps the inner
    await prov.provision(delegate("42", "sub.example.org", "2-2"))
    assert redis_db.hget("zone", "sub.example.org") == b'{"Owner":"42"}'
    await SubdomainProvisioner(store).provision(subdomain("42", "api.sub.example.org", ["1.1.1.1"]))
    await prov.decommission(delegate("42", "example.org"))
    assert redis_db.exists("example.org.") == 0
    assert redis_db.hget("managed_domains", "www.example.org") is None
    assert redis_db.hget("managed_domains", "api.sub.example.org") == b"42"
    assert redis_db.hget("sub.example.org.", "api") == b'{"a":[{"ip":"1.1.1.1","ttl":3600}]}'


async def test_concurrent_claims_have_exactly_one_winner(
    store: DNSStore, redis_db: redis.Redis
) -> None:
    prov = SubdomainProvisioner(store)
    users = [str(u) for u in range(1, 21)]
    results = await asyncio.gather(
        *(
            prov.provision(subdomain(u, "race.gateway.example.com", [f"1.1.1.{i + 1}"], f"{u}-1"))
            for i, u in enumerate(users)
        ),
        return_exceptions=True,
    )
    winners = [u for u, res in zip(users, results, strict=True) if res is None]
    assert len(winners) == 1
    assert all(isinstance(res, ProvisionError) for res in results if res is not None)
    winner = winners[0]
    assert redis_db.hget("managed_domains", "race.gateway.example.com") == winner.encode()
    value = json.loads(redis_db.hget("gateway.example.com.", "race") or b"")
    assert value == {"a": [{"ip": f"1.1.1.{int(winner)}", "ttl": 3600}]}

    zones = [f"z{i}.example.net" for i in range(10)]
    dp = DelegateProvisioner(store)
    results = await asyncio.gather(
        *(dp.provision(delegate(u, "contested.example.net", f"{u}-2")) for u in users),
        *(dp.provision(delegate("7", z, f"z-{z}")) for z in zones),
        return_exceptions=True,
    )
    assert sum(1 for res in results[: len(users)] if res is None) == 1
    assert all(res is None for res in results[len(users) :])


def owner_txt_text(owner: str) -> str:
    """The `__owner__` TXT text, escaped as it sits inside the JSON value."""
    return f'{{\\"identity\\":\\"{GW}\\",\\"owner\\":\\"{owner}\\"}}'


def owner_txt(owner: str) -> bytes:
    return b'{"txt":[{"text":"%s","ttl":600}]}' % owner_txt_text(owner).encode()


GO_DAEMON_STATE: dict[str, dict[str, bytes]] = {
    # what the Go daemon left in redis for: managed domain, a subdomain of user 42, a zone
    # delegated to user 42 with a name in it, and a zone whose removal hit upstream's bug
    "zone": {
        "gateway.example.com": b'{"Owner":"%s"}' % GW.encode(),
        "example.org": b'{"Owner":"42"}',
    },
    "gateway.example.com.": {
        "__owner__": owner_txt(GW),
        "app": b'{"a":[{"ip":"185.69.166.1","ttl":3600}]}',
    },
    "example.org.": {
        "__owner__": owner_txt("42"),
        "www": b'{"a":[{"ip":"1.2.3.4","ttl":3600}]}',
    },
    "old.example.net.": {
        "__owner__": owner_txt("42"),
    },
    "managed_domains": {"app.gateway.example.com": b"42", "www.example.org": b"42"},
}


async def test_redis_written_by_the_go_daemon(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    for key, fields in GO_DAEMON_STATE.items():
        redis_db.hset(key, mapping=dict(fields.items()))
    store = DNSStore(aredis, GW, NAMESERVERS, proofs=NameProofs.first_come(aredis))
    await store.setup_managed_domains(["gateway.example.com"])
    # start-up gives every zone, also the delegated one, its apex
    assert redis_db.hget("example.org.", "@") == APEX % b"example.org"
    assert (
        redis_db.hget("gateway.example.com.", "app")
        == GO_DAEMON_STATE["gateway.example.com."]["app"]
    )
    sub = SubdomainProvisioner(store)
    with pytest.raises(ProvisionError, match="another user"):
        await sub.provision(subdomain("99", "app.gateway.example.com", ["6.6.6.6"]))
    # the owner's reservation re-applied keeps the Go bytes
    await sub.provision(subdomain("42", "app.gateway.example.com", ["185.69.166.1"]))
    assert (
        redis_db.hget("gateway.example.com.", "app")
        == GO_DAEMON_STATE["gateway.example.com."]["app"]
    )
    await sub.decommission(subdomain("42", "www.example.org", ["1.2.3.4"]))
    assert redis_db.hget("example.org.", "www") is None
    # the leftover of upstream's removal bug is cleaned by its owner, not by others
    dp = DelegateProvisioner(store)
    await dp.decommission(delegate("99", "old.example.net"))
    assert redis_db.exists("old.example.net.") == 1
    await dp.decommission(delegate("42", "old.example.net"))
    assert redis_db.exists("old.example.net.") == 0


async def test_managed_domain_delegated_to_a_user_stops_setup(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    redis_db.hset("zone", "taken.example.com", b'{"Owner":"42"}')
    store = DNSStore(aredis, GW, NAMESERVERS, proofs=NameProofs.first_come(aredis))
    with pytest.raises(ValueError, match="delegated to user 42"):
        await store.setup_managed_domains(["taken.example.com"])
    with pytest.raises(ValueError, match="invalid managed domain"):
        await store.setup_managed_domains(["bad_domain.com"])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    domain=st.one_of(
        st.text(max_size=40),
        st.from_regex(r"[a-zA-Z0-9*_.-]{1,12}\.gateway\.example\.com\.?", fullmatch=True),
    ),
    ips=st.lists(
        st.one_of(st.text(max_size=20), st.ip_addresses().map(str), st.integers()), max_size=4
    ),
    user=st.sampled_from(["42", "99"]),
)
async def test_hostile_subdomains_never_crash_or_take_over(
    store: DNSStore, redis_db: redis.Redis, domain: str, ips: list[Any], user: str
) -> None:
    redis_db.hset("managed_domains", "owned.gateway.example.com", b"7")
    redis_db.hset("gateway.example.com.", "owned", b'{"a":[{"ip":"9.9.9.9","ttl":3600}]}')
    prov = SubdomainProvisioner(store)
    r = subdomain(user, domain, ips)
    with contextlib.suppress(ProvisionError):
        await prov.provision(r)
    await prov.decommission(r)
    assert redis_db.hget("managed_domains", "owned.gateway.example.com") == b"7"
    assert redis_db.hget("gateway.example.com.", "owned") == b'{"a":[{"ip":"9.9.9.9","ttl":3600}]}'


# ----- served by the real CoreDNS with the gateway's plugin -----


@pytest.fixture
def coredns(redis_server: Any, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(
        f".:{port} {{\n    bind 127.0.0.1\n    gatewaydns {{\n"
        f"        address 127.0.0.1:{redis_server.port}\n    }}\n}}\n"
    )
    proc = subprocess.Popen(
        [binary("coredns-tfgw"), "-conf", str(corefile)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open("127.0.0.1", port), what="coredns")
        yield port
    finally:
        proc.kill()  # its graceful shutdown takes seconds and nothing here needs it
        proc.wait(5)


async def _ask(port: int, name: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)


async def _answers(port: int, name: str, rdtype: str) -> set[str]:
    resp = await _ask(port, name, rdtype)
    return {rd.to_text() for rrset in resp.answer for rd in rrset}


async def _wait_answer(port: int, name: str, rdtype: str, want: set[str]) -> None:
    """Poll the server (it loads changes pushed from redis) until it answers `want`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    got: set[str] = set()
    while loop.time() < deadline:
        got = await _answers(port, name, rdtype)
        if got == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} {rdtype}: got {got}, want {want}")


async def test_coredns_serves_what_the_agent_wrote(store: DNSStore, coredns: int) -> None:
    sub = SubdomainProvisioner(store)
    await sub.provision(
        subdomain("42", "app.gateway.example.com", ["185.69.166.1", "2a02:1802:5e::1"])
    )
    await DelegateProvisioner(store).provision(delegate("42", "example.org"))
    await sub.provision(subdomain("42", "www.example.org", ["1.2.3.4"]))
    await _wait_answer(coredns, "app.gateway.example.com", "A", {"185.69.166.1"})
    await _wait_answer(coredns, "app.gateway.example.com", "AAAA", {"2a02:1802:5e::1"})
    await _wait_answer(coredns, "www.example.org", "A", {"1.2.3.4"})
    ns = {"ns1.gateway.example.com.", "ns2.gateway.example.com."}
    await _wait_answer(coredns, "example.org", "NS", ns)
    await _wait_answer(coredns, "gateway.example.com", "NS", ns)
    soa = await _ask(coredns, "example.org", "SOA")
    assert soa.rcode() == dns.rcode.NOERROR
    (rd,) = [rd for rrset in soa.answer for rd in rrset]
    assert rd.mname.to_text() == "ns1.gateway.example.com."
    assert rd.rname.to_text() == "hostmaster.example.org."
    owner = await _answers(coredns, "__owner__.example.org", "TXT")
    assert owner == {'"' + owner_txt_text("42") + '"'}
    # a change of the zone changes its serial (derived from the content by the plugin)
    await sub.provision(subdomain("42", "api.example.org", ["1.2.3.5"]))
    await _wait_answer(coredns, "api.example.org", "A", {"1.2.3.5"})
    (rd2,) = [rd for rrset in (await _ask(coredns, "example.org", "SOA")).answer for rd in rrset]
    assert rd2.serial != rd.serial
    # removing the delegation takes the zone away and leaves the managed domain alone
    await DelegateProvisioner(store).decommission(delegate("42", "example.org"))
    await _wait_answer(coredns, "www.example.org", "A", set())
    await _wait_answer(coredns, "app.gateway.example.com", "A", {"185.69.166.1"})


async def test_nameserver_change_refreshes_every_apex(
    store: DNSStore, aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    await DelegateProvisioner(store).provision(delegate("42", "example.org"))
    await SubdomainProvisioner(store).provision(subdomain("42", "example.org", ["1.2.3.5"]))
    other = DNSStore(
        aredis,
        GW,
        ["dns.other.net"],
        hostmaster="first.last@example.net",
        proofs=NameProofs.first_come(aredis),
    )
    await other.setup_managed_domains(["gateway.example.com"])
    for zone in ("gateway.example.com", "example.org"):
        apex = json.loads(redis_db.hget(f"{zone}.", "@") or b"")
        assert apex["ns"] == [{"host": "dns.other.net.", "ttl": 3600}]
        assert apex["soa"]["ns"] == "dns.other.net."
        assert apex["soa"]["MBox"] == "first\\.last.example.net."
    # the owner's apex address survives the refresh
    apex = json.loads(redis_db.hget("example.org.", "@") or b"")
    assert apex["a"] == [{"ip": "1.2.3.5", "ttl": 3600}]
    # without nameservers there is no NS set, and the SOA names the zone's own ns1
    bare = DNSStore(aredis, GW, [], proofs=NameProofs.first_come(aredis))
    await bare.setup_managed_domains([])
    apex = json.loads(redis_db.hget("example.org.", "@") or b"")
    assert "ns" not in apex
    assert apex["soa"]["ns"] == "ns1.example.org."
    with pytest.raises(ValueError, match="hostmaster"):
        DNSStore(aredis, GW, [], hostmaster="a b@example.com", proofs=NameProofs.first_come(aredis))


async def test_cleanup_removes_empty_record_sets_only(
    store: DNSStore, redis_db: redis.Redis
) -> None:
    redis_db.hset("gateway.example.com.", mapping={"empty": b"", "blank": b"{}", "ok": b'{"a":[]}'})
    redis_db.set("notahash.", b"x")
    assert await store.cleanup() == 2
    fields = set(redis_db.hkeys("gateway.example.com."))
    assert fields == {b"@", b"__owner__", b"ok"}
    assert redis_db.get("notahash.") == b"x"


async def test_redis_failure_is_a_transient_provision_error(redis_url: str) -> None:
    """A ProvisionError caused by redis, chained so the engine retries instead of blaming."""
    dead = connect(
        f"tcp://127.0.0.1:{free_port()}", socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        store = DNSStore(dead, GW, NAMESERVERS, proofs=NameProofs.first_come(dead))
        with pytest.raises(ProvisionError) as info:
            await SubdomainProvisioner(store).provision(
                subdomain("42", "app.gateway.example.com", ["1.1.1.1"])
            )
        assert isinstance(info.value.__cause__, RedisError)
        with pytest.raises(RedisError):
            await store.setup_managed_domains(["gateway.example.com"])
    finally:
        await dead.aclose()
