"""Names belong to whoever can prove them: proofs looked up in a real DNS server (`WorldDNS`:
coredns-tfgw on its own redis), claims and rechecks against the gateway's real redis."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from tests.support.world_dns import WorldDNS
from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.coredns_redis import ZONE_OWNERS_KEY
from tfgateway.primitives.dns import DelegateProvisioner, DNSStore, SubdomainProvisioner
from tfgateway.primitives.name_proofs import (
    ENFORCED_KEY,
    PROOFS_KEY,
    NameProofs,
    ProofMode,
    ProofRecord,
    ProofState,
)
from tfgateway.primitives.proof import ProofChecker, ProofOutcome, parse_resolver
from tfgateway.primitives.provisioner import ProvisionError, reapplying
from tfgateway.primitives.proxy import ProxyProvisioner
from tfgateway.primitives.tcprouter import encode_service, proxy_key
from tfgateway.store.url import connect

pytestmark = pytest.mark.integration

GW = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
MANAGED = "gw.example"
OWNER, SQUATTER = "42", "7"
RECHECK = 3600.0
_names = itertools.count(1)


@pytest.fixture
def world(world_dns: WorldDNS) -> WorldDNS:
    return world_dns


@pytest.fixture
def site() -> str:
    """A registrable name of its own per test, at the 'provider' the world DNS plays."""
    return f"proofs{next(_names)}.example"


@dataclass
class Clock:
    now: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    """The primitives as the agent wires them, sharing one proof policy."""

    proofs: NameProofs
    dns: DNSStore
    proxy: ProxyProvisioner
    clock: Clock
    db: redis.Redis

    def route_user(self, name: str) -> str | None:
        raw = self.db.get(proxy_key(name))
        if raw is None:
            return None
        inner = json.loads(base64.b64decode(json.loads(raw)["Value"]))
        return str(inner["user"])

    def record(self, kind: str, name: str) -> ProofRecord | None:
        return ProofRecord.decode(self.db.hget(PROOFS_KEY, f"{kind} {name}"))

    def zone_owner(self, zone: str) -> str | None:
        raw = self.db.hget(ZONE_OWNERS_KEY, zone)
        return None if raw is None else str(json.loads(raw)["Owner"])


async def make_gateway(
    aredis: redis.asyncio.Redis,
    redis_db: redis.Redis,
    resolver: str,
    *,
    mode: ProofMode = ProofMode.REQUIRED,
    lookup_timeout: float = 2.0,
    grace: float = 86400.0,
    upgrade: bool = False,
) -> Gateway:
    """A gateway enforcing proofs already, or (`upgrade`) for the first time."""
    if not upgrade:
        redis_db.set(ENFORCED_KEY, "1")
    clock = Clock()
    proofs = NameProofs(
        aredis,
        mode=mode,
        managed_domains=[MANAGED],
        checker=ProofChecker([parse_resolver(resolver)], lookup_timeout),
        recheck_interval=RECHECK,
        grace=grace,
        clock=clock,
    )
    dns_store = DNSStore(aredis, GW, ["ns1.gw.example"], proofs=proofs)
    await dns_store.setup_managed_domains([MANAGED])
    proxy = ProxyProvisioner(aredis, GW, proofs=proofs)
    await proofs.start()
    return Gateway(proofs, dns_store, proxy, clock, redis_db)


@pytest.fixture
async def gw(aredis: redis.asyncio.Redis, redis_db: redis.Redis, world: WorldDNS) -> Gateway:
    return await make_gateway(aredis, redis_db, world.resolver)


def proxy(user: str, domain: str, rid: str = "1-1") -> Reservation:
    data = gojson.marshal({"domain": domain, "addr": "185.69.166.9", "port": 80, "port_tls": 443})
    return Reservation(id=rid, user_id=user, type="proxy", node_id=GW, data=data)


def delegate(user: str, domain: str, rid: str = "2-1") -> Reservation:
    return Reservation(id=rid, user_id=user, type="domain_delegate", node_id=GW,
                       data=gojson.marshal({"domain": domain}))  # fmt: skip


def subdomain(user: str, domain: str, rid: str = "3-1") -> Reservation:
    data = gojson.marshal({"domain": domain, "destination": ["185.69.166.10"]})
    return Reservation(id=rid, user_id=user, type="subdomain", node_id=GW, data=data)


async def reapply(provisioner: Any, r: Reservation) -> None:
    with reapplying():
        await provisioner.provision(r)


# -- the lookup ----------------------------------------------------------------------------------


async def test_lookup_outcomes(world: WorldDNS, site: str) -> None:
    checker = ProofChecker([parse_resolver(world.resolver)], 2.0)
    name = f"www.{site}"
    world.add_zone(site)
    absent = await checker.check(name, OWNER)
    assert absent.outcome is ProofOutcome.ABSENT
    assert f"_tfgateway.{name}" in absent.reason

    world.publish_proof(name, "1", OWNER, "other")  # several users allowed by one owner
    proven = await checker.check(name, OWNER)
    assert proven.proven, proven.reason
    assert (await checker.check(name, "4")).outcome is ProofOutcome.ABSENT  # "4" ⊂ "42": exact

    world.publish_proof(name, "not-you")
    other = await checker.check(name, OWNER)
    assert other.outcome is ProofOutcome.ABSENT
    assert "not-you" in other.reason

    # A zone the world does not serve: REFUSED, so no usable answer (never a refusal of a live
    # name on that ground).
    unknown = await checker.check("www.unserved.test", OWNER)
    assert unknown.outcome is ProofOutcome.UNKNOWN, unknown.reason


async def test_lookup_has_a_deadline() -> None:
    """A resolver that never answers: UNKNOWN within the timeout, not a hang."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        checker = ProofChecker([("127.0.0.1", silent.getsockname()[1])], 0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        verdict = await checker.check("www.example.com", OWNER)
        elapsed = loop.time() - started
    assert verdict.outcome is ProofOutcome.UNKNOWN
    assert "0.5s" in verdict.reason
    assert elapsed < 2.0


async def test_a_host_without_resolvers_refuses_claims_with_the_reason(tmp_path: Path) -> None:
    checker = ProofChecker(resolv_conf=str(tmp_path / "missing"))
    verdict = await checker.check("www.example.com", OWNER)
    assert verdict.outcome is ProofOutcome.UNKNOWN
    assert "pass --proof-resolver" in verdict.reason
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.53\nsearch example.com\n")
    assert ProofChecker(resolv_conf=str(tmp_path / "resolv.conf")).resolvers == ["192.0.2.53:53"]


async def test_hostile_proof_records_give_bounded_printable_reasons(
    world: WorldDNS, site: str
) -> None:
    name = f"www.{site}"
    world.publish_proof(name, *(f"\x01junk{i}" + "x" * 200 for i in range(20)))
    verdict = await ProofChecker([parse_resolver(world.resolver)], 2.0).check(name, OWNER)
    assert verdict.outcome is ProofOutcome.ABSENT
    assert "\x01" not in verdict.reason
    assert len(verdict.reason) < 500
    assert "and 18 more" in verdict.reason
    # The longest name a workload may have leaves no room for the proof label.
    long_name = ".".join(["a" * 63] * 3 + ["b" * 61])
    too_long = await ProofChecker([parse_resolver(world.resolver)], 2.0).check(long_name, OWNER)
    assert too_long.outcome is ProofOutcome.ABSENT
    assert "too long" in too_long.reason


# -- proxies ---------------------------------------------------------------------------------------


async def test_squatting_a_name_before_its_owner_points_it_here_is_refused(
    gw: Gateway, world: WorldDNS, site: str
) -> None:
    """The scenario of issue 13: anyone creating a proxy for www.someone-else.com first."""
    name = f"www.{site}"
    world.add_zone(site)
    with pytest.raises(ProvisionError, match=rf"no TXT record at _tfgateway\.{name}.*user id 7"):
        await gw.proxy.provision(proxy(SQUATTER, name))
    assert gw.route_user(name) is None
    assert gw.record("proxy", name) is None

    world.publish_proof(name, OWNER)
    with pytest.raises(ProvisionError, match=r"hold other ids: '42'.*user id 7"):
        await gw.proxy.provision(proxy(SQUATTER, name))
    await gw.proxy.provision(proxy(OWNER, name, rid="9-1"))
    assert gw.route_user(name) == OWNER
    record = gw.record("proxy", name)
    assert record is not None
    assert record.state is ProofState.PROVEN
    assert record.user == OWNER
    assert RECHECK * 0.9 <= record.due - gw.clock.now <= RECHECK * 1.1


async def test_managed_domains_and_the_users_own_zones_need_no_proof(
    gw: Gateway, world: WorldDNS, site: str
) -> None:
    await gw.proxy.provision(proxy(SQUATTER, f"shop.{MANAGED}"))  # the gateway's own names
    assert gw.route_user(f"shop.{MANAGED}") == SQUATTER
    # Known from the configuration, not only from redis: right after redis lost its data (the
    # managed zone not written back yet), a proxy re-applied there is still no stranger's name.
    gw.db.hdel(ZONE_OWNERS_KEY, MANAGED)
    await reapply(gw.proxy, proxy(SQUATTER, f"cart.{MANAGED}"))
    assert gw.route_user(f"cart.{MANAGED}") == SQUATTER
    assert await gw.proofs.records() == []

    world.publish_proof(site, OWNER)
    await DelegateProvisioner(gw.dns).provision(delegate(OWNER, site))
    for name in (site, f"www.{site}", f"a.b.{site}"):  # the zone's proof covers its names
        await gw.proxy.provision(proxy(OWNER, name, rid=f"p-{name}"))
        assert gw.route_user(name) == OWNER
        assert gw.record("proxy", name) is None
    with pytest.raises(ProvisionError, match="belongs to another user"):
        await gw.proxy.provision(proxy(SQUATTER, f"api.{site}"))


async def test_a_lapsed_proof_suspends_the_route_and_a_returning_one_restores_it(
    gw: Gateway, world: WorldDNS, site: str
) -> None:
    name = f"www.{site}"
    world.publish_proof(name, OWNER)
    r = proxy(OWNER, name)
    await gw.proxy.provision(r)
    assert (await gw.proofs.recheck_due()).checked == 0  # not due yet

    world.withdraw_proof(name)
    gw.clock.now += RECHECK * 1.2
    summary = await gw.proofs.recheck_due()
    assert (summary.checked, summary.suspended) == (1, 1)
    assert gw.route_user(name) is None  # the router no longer serves it
    record = gw.record("proxy", name)
    assert record is not None
    assert record.state is ProofState.SUSPENDED
    assert f"_tfgateway.{name}" in record.reason  # why, for `tfgateway status`
    await reapply(gw.proxy, r)  # the engine's reconcile: the workload stays live, unserved
    assert gw.route_user(name) is None

    gw.clock.now += gw.proofs.retry_interval
    assert (await gw.proofs.recheck_due()).suspended == 0  # still absent: stays suspended
    world.publish_proof(name, OWNER)
    gw.clock.now += gw.proofs.retry_interval
    assert (await gw.proofs.recheck_due()).restored == 1
    await reapply(gw.proxy, r)
    assert gw.route_user(name) == OWNER


async def test_a_resolver_outage_never_suspends(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, world: WorldDNS, site: str
) -> None:
    name = f"www.{site}"
    world.publish_proof(name, OWNER)
    gw = await make_gateway(aredis, redis_db, world.resolver)
    await gw.proxy.provision(proxy(OWNER, name))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        dead = await make_gateway(aredis, redis_db, f"127.0.0.1:{port}", lookup_timeout=0.3)
        dead.clock.now = gw.clock.now + RECHECK * 2
        summary = await dead.proofs.recheck_due()
    assert (summary.checked, summary.unknown, summary.suspended) == (1, 1, 0)
    assert gw.route_user(name) == OWNER
    record = gw.record("proxy", name)
    assert record is not None
    assert record.state is ProofState.PROVEN
    assert record.due == dead.clock.now + dead.proofs.retry_interval  # asked again soon


async def test_a_suspended_name_goes_to_whoever_proves_it(
    gw: Gateway, world: WorldDNS, site: str
) -> None:
    name = f"www.{site}"
    world.publish_proof(name, OWNER)
    await gw.proxy.provision(proxy(OWNER, name))
    world.publish_proof(name, SQUATTER)  # the name changed hands (sold, expired)
    gw.clock.now += RECHECK * 2
    assert (await gw.proofs.recheck_due()).suspended == 1
    await gw.proxy.provision(proxy(SQUATTER, name, rid="5-1"))
    assert gw.route_user(name) == SQUATTER
    with pytest.raises(ProvisionError, match="another user"):
        await reapply(gw.proxy, proxy(OWNER, name))  # the old holder cannot take it back
    await gw.proxy.decommission(proxy(OWNER, name))  # nor remove it
    assert gw.route_user(name) == SQUATTER


async def test_decommission_forgets_the_proof(gw: Gateway, world: WorldDNS, site: str) -> None:
    name = f"www.{site}"
    world.publish_proof(name, OWNER)
    await gw.proxy.provision(proxy(OWNER, name))
    world.withdraw_proof(name)
    gw.clock.now += RECHECK * 2
    await gw.proofs.recheck_due()
    await gw.proxy.decommission(proxy(OWNER, name))  # suspended: no route, record goes
    assert gw.record("proxy", name) is None
    assert await gw.proofs.records() == []


# -- upgrade: names served before proofs were enforced -------------------------------------------


async def test_upgrade_grandfathers_live_names_until_their_first_check_fails(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, world: WorldDNS, site: str
) -> None:
    """A v2 gateway switched to ours: the Go daemon's bytes for an unproven name are kept."""
    name, zone = f"www.{site}", f"zone-{site}"
    world.add_zone(site)
    world.add_zone(zone)
    redis_db.set(proxy_key(name), encode_service(name, addr="185.69.166.9", http_port=80,
                                                 user=SQUATTER))  # fmt: skip
    redis_db.hset(ZONE_OWNERS_KEY, zone, '{"Owner":"7"}')
    gw = await make_gateway(aredis, redis_db, world.resolver, grace=600.0, upgrade=True)
    assert gw.proofs.upgrading
    await reapply(gw.proxy, proxy(SQUATTER, name))
    await reapply(DelegateProvisioner(gw.dns), delegate(SQUATTER, zone))
    await gw.proofs.settle()
    assert redis_db.exists(ENFORCED_KEY)
    assert not gw.proofs.upgrading
    assert gw.route_user(name) == SQUATTER
    assert gw.zone_owner(zone) == SQUATTER
    for kind, key in (("proxy", name), ("zone", zone)):
        record = gw.record(kind, key)
        assert record is not None
        assert record.state is ProofState.GRANDFATHERED
        assert record.due == gw.clock.now + 600.0
    # A new claim is not grandfathered, even during the upgrade's first pass.
    with pytest.raises(ProvisionError, match="no proof of control"):
        await gw.proxy.provision(proxy(SQUATTER, f"new.{site}"))

    gw.clock.now += 601.0
    assert (await gw.proofs.recheck_due()).suspended == 2
    assert gw.route_user(name) is None
    assert gw.zone_owner(zone) is None

    # The next start enforces at once: an unproven name appearing now is not grandfathered.
    later = f"later.{site}"
    redis_db.set(proxy_key(later), encode_service(later, addr="185.69.166.9", http_port=80,
                                                  user=SQUATTER))  # fmt: skip
    again = await make_gateway(aredis, redis_db, world.resolver)
    assert not again.proofs.upgrading
    await reapply(again.proxy, proxy(SQUATTER, later))
    assert again.route_user(later) is None


async def test_first_come_mode_is_the_go_daemons_behaviour(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, world: WorldDNS, site: str
) -> None:
    redis_db.set(ENFORCED_KEY, "1")
    gw = await make_gateway(aredis, redis_db, world.resolver, mode=ProofMode.FIRST_COME)
    assert not redis_db.exists(ENFORCED_KEY)  # switching back to required grandfathers again
    await gw.proxy.provision(proxy(SQUATTER, f"www.{site}"))
    assert gw.route_user(f"www.{site}") == SQUATTER
    await DelegateProvisioner(gw.dns).provision(delegate(SQUATTER, f"other-{site}"))
    assert gw.zone_owner(f"other-{site}") == SQUATTER
    assert await gw.proofs.records() == []
    # Public suffixes stay refused in every mode.
    with pytest.raises(ProvisionError, match="public suffix"):
        await DelegateProvisioner(gw.dns).provision(delegate(SQUATTER, "github.io"))


# -- delegations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["co.uk", "github.io", "s3.amazonaws.com", "foo.ck"])
async def test_public_suffixes_can_never_be_delegated(
    gw: Gateway, world: WorldDNS, suffix: str
) -> None:
    world.publish_proof(suffix, OWNER)  # not even with a proof
    with pytest.raises(ProvisionError, match="public suffix"):
        await DelegateProvisioner(gw.dns).provision(delegate(OWNER, suffix))
    assert gw.zone_owner(suffix) is None


async def test_a_delegation_needs_proof_and_serves_its_own(
    gw: Gateway, world: WorldDNS, site: str
) -> None:
    world.add_zone(site)
    prov = DelegateProvisioner(gw.dns)
    with pytest.raises(ProvisionError, match=rf"_tfgateway\.{site}"):
        await prov.provision(delegate(SQUATTER, site))
    assert gw.zone_owner(site) is None
    world.publish_proof(site, OWNER)
    await prov.provision(delegate(OWNER, site))
    assert gw.zone_owner(site) == OWNER
    # Once the zone is delegated here, the gateway answers its proof itself.
    proof = json.loads(gw.db.hget(f"{site}.", "_tfgateway") or b"{}")
    assert [t["text"] for t in proof["txt"]] == [OWNER]
    # A zone inside the user's own zone is covered by the outer proof.
    await prov.provision(delegate(OWNER, f"lab.{site}", rid="2-2"))
    assert gw.record("zone", f"lab.{site}") is None


async def test_delegating_around_another_users_names_is_refused(
    gw: Gateway, world: WorldDNS, site: str
) -> None:
    """Whoever first delegates a broad name owned every name under it (issue 13)."""
    world.publish_proof(f"shop.{site}", SQUATTER)
    await gw.proxy.provision(proxy(SQUATTER, f"shop.{site}"))
    world.publish_proof(site, OWNER, SQUATTER)
    with pytest.raises(ProvisionError, match=rf"shop\.{site} inside it is served by another"):
        await DelegateProvisioner(gw.dns).provision(delegate(OWNER, site))
    # The proxy's own user may delegate around it.
    await DelegateProvisioner(gw.dns).provision(delegate(SQUATTER, site))
    assert gw.zone_owner(site) == SQUATTER


async def test_a_suspended_zone_withdraws_its_names_and_comes_back(
    gw: Gateway, world: WorldDNS, site: str
) -> None:
    world.publish_proof(site, OWNER)
    zone, sub = delegate(OWNER, site), subdomain(OWNER, f"www.{site}")
    web = proxy(OWNER, f"www.{site}")
    await DelegateProvisioner(gw.dns).provision(zone)
    await SubdomainProvisioner(gw.dns).provision(sub)
    await gw.proxy.provision(web)

    world.withdraw_proof(site)
    gw.clock.now += RECHECK * 2
    assert (await gw.proofs.recheck_due()).suspended == 1
    assert gw.zone_owner(site) is None
    assert not gw.db.exists(f"{site}.")
    # The engine's reconcile: the zone stays withdrawn and its subdomain waits quietly; the
    # proxy in it lost the zone's cover, so it needs a proof of its own (and is suspended).
    await reapply(DelegateProvisioner(gw.dns), zone)
    await reapply(SubdomainProvisioner(gw.dns), sub)
    await reapply(gw.proxy, web)
    assert gw.zone_owner(site) is None
    assert gw.route_user(f"www.{site}") is None

    world.publish_proof(site, OWNER)
    gw.clock.now += gw.proofs.retry_interval
    assert (await gw.proofs.recheck_due()).restored == 1
    for provisioner, r in ((DelegateProvisioner(gw.dns), zone), (SubdomainProvisioner(gw.dns), sub),
                           (gw.proxy, web)):  # fmt: skip
        await reapply(provisioner, r)
    assert gw.zone_owner(site) == OWNER
    assert gw.db.hget("managed_domains", f"www.{site}") == OWNER.encode()
    assert gw.route_user(f"www.{site}") == OWNER
    assert gw.record("proxy", f"www.{site}") is None  # covered by the zone again


async def test_a_proxy_racing_a_delegation_around_it_never_both_win(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, redis_url: str, world: WorldDNS, site: str
) -> None:
    """The delegation scans the services under its zone; a service created meanwhile moves
    the generation it read, so its check-and-set runs again and sees it."""
    world.publish_proof(site, OWNER)
    rival_redis = connect(redis_url)
    try:
        gw = await make_gateway(aredis, redis_db, world.resolver, mode=ProofMode.FIRST_COME)
        rival = ProxyProvisioner(rival_redis, GW, proofs=NameProofs.first_come(rival_redis))
        for i in range(20):
            zone = f"z{i}-{site}"
            outcomes = await asyncio.gather(
                DelegateProvisioner(gw.dns).provision(delegate(OWNER, zone, rid=f"d{i}")),
                rival.provision(proxy(SQUATTER, f"www.{zone}", rid=f"p{i}")),
                return_exceptions=True,
            )
            assert [o is None for o in outcomes].count(True) == 1, outcomes
            assert (gw.zone_owner(zone) == OWNER) != (gw.route_user(f"www.{zone}") == SQUATTER)
    finally:
        await rival_redis.aclose()


def test_records_survive_their_codec() -> None:
    record = ProofRecord("42", ProofState.SUSPENDED, 1.0, 2.0, 3.0, "gone")
    assert ProofRecord.decode(record.encode()) == record
    for bad in (None, b"", b"{", b"[]", b'{"user":"1"}', b'{"user":"1","state":"odd","since":0,'
                b'"checked":0,"due":0}'):  # fmt: skip
        assert ProofRecord.decode(bad) is None


def test_parse_resolver() -> None:
    assert parse_resolver("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_resolver("10.0.0.1:5353") == ("10.0.0.1", 5353)
    assert parse_resolver("[2001:db8::1]:53") == ("2001:db8::1", 53)
    assert parse_resolver("2001:db8::1") == ("2001:db8::1", 53)
    for bad in ("dns.google", "10.0.0.1:0", "10.0.0.1:x", "[::1", "[::1]x"):
        with pytest.raises(ValueError, match="resolver"):
            parse_resolver(bad)
