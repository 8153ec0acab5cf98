"""The workloads file applied by difference against a real redis-server, through the real
DNS, proxy and 4to6 provisioners (4to6 on the in-memory WireGuard link)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from tests.support.wireguard import MemoryLink, new_key
from tfgateway.declared.records import FILE_KEY, RECORDS_KEY
from tfgateway.declared.source import DeclaredSource
from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.node.identity import Identity
from tfgateway.primitives.dns import DelegateProvisioner, DNSStore, SubdomainProvisioner
from tfgateway.primitives.fourtosix import FourToSixProvisioner, user_address
from tfgateway.primitives.name_proofs import NameProofs
from tfgateway.primitives.provisioner import Provisioner, ProvisionError
from tfgateway.primitives.proxy import ProxyProvisioner, ReverseProxyProvisioner
from tfgateway.primitives.tcprouter import decode_service, proxy_key
from tfgateway.store.batch import AutoPipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GATEWAY = Identity(b"2" * 32)
DOMAIN = "gw.example"
SECRET = "0:" + "s" * 32


@dataclass
class World:
    source: DeclaredSource
    path: Path
    redis: redis.Redis
    explorer_proxy: ProxyProvisioner
    link: MemoryLink
    provisioners: dict[str, Provisioner]

    def write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)  # as editors that save by renaming do

    def fresh_source(self) -> DeclaredSource:
        return DeclaredSource(self.path, self.source.batch, self.provisioners, allow_private=True)


async def _no_key(tid: int) -> bytes:
    raise ProvisionError("no phonebook here")


@pytest.fixture
async def world(aredis: redis.asyncio.Redis, redis_db: redis.Redis, tmp_path: Path) -> World:
    batch = AutoPipeline(aredis)
    names = NameProofs.first_come(batch)
    dns = DNSStore(batch, GATEWAY.node_id, ["ns1.gw.example"], proofs=names)
    await dns.setup_managed_domains([DOMAIN])
    link = MemoryLink("wg-test")
    fourtosix = FourToSixProvisioner(
        GATEWAY.seed, "198.51.100.1:51820", "wg-test", link=link,
        forwarding_sysctl=tmp_path / "forwarding",
    )  # fmt: skip
    await fourtosix.setup()
    await fourtosix.converge([])
    provisioners: dict[str, Provisioner] = {
        "subdomain": SubdomainProvisioner(dns),
        "domain_delegate": DelegateProvisioner(dns),
        "proxy": ProxyProvisioner(batch, GATEWAY.node_id, proofs=names, allow_private=True,
                                  declared=True),
        "reverse_proxy": ReverseProxyProvisioner(batch, GATEWAY, _no_key, proofs=names,
                                                 declared=True),
        "gateway4to6": fourtosix,
    }  # fmt: skip
    path = tmp_path / "workloads.toml"
    path.write_text("")
    source = DeclaredSource(
        path, batch, provisioners, allow_private=True, tunnel_remote="198.51.100.1:18000"
    )
    explorer_proxy = ProxyProvisioner(batch, GATEWAY.node_id, proofs=names, allow_private=True)
    return World(source, path, redis_db, explorer_proxy, link, provisioners)


def read_record(r: redis.Redis, name: str) -> Any:
    raw = r.hget(RECORDS_KEY, name)
    assert isinstance(raw, bytes), f"no record for {name}"
    return json.loads(raw)


def state_of_file(r: redis.Redis) -> Any:
    raw = r.get(FILE_KEY)
    assert isinstance(raw, bytes)
    return json.loads(raw)


def route(r: redis.Redis, domain: str) -> dict[str, Any] | None:
    raw = r.get(proxy_key(domain))
    return None if raw is None else decode_service(raw)


def a_records(r: redis.Redis, zone: str, name: str) -> list[str]:
    raw = r.hget(f"{zone}.", name)
    if raw is None:
        return []
    return sorted(x["ip"] for x in json.loads(raw).get("a", []))


def subdomains(n: int, prefix: str = "s", ip: str = "203.0.113.7") -> str:
    return "".join(
        f'[[subdomain]]\nname = "{prefix}{i}"\ndomain = "{prefix}{i}.{DOMAIN}"\n'
        f'addresses = ["{ip}"]\n'
        for i in range(n)
    )


async def test_every_kind_is_served_and_recorded(world: World, tmp_path: Path) -> None:
    secret_file = tmp_path / "home-tunnel"
    secret_file.write_text(SECRET + "\n")
    key = new_key()
    world.write(f"""
[[delegation]]
name = "acme"
domain = "acme.org"

[[subdomain]]
name = "blog"
domain = "blog.{DOMAIN}"
addresses = ["203.0.113.7", "2001:db8::7"]

[[proxy]]
name = "shop"
domain = "shop.acme.org"
address = "10.0.0.8"
port = 8080
port_tls = 8443
terminate_tls = true
proxy_protocol = 2

[[reverse_proxy]]
name = "home"
domain = "home.{DOMAIN}"
secret_file = "{secret_file}"

[[fourtosix]]
name = "laptop"
public_key = "{key}"
""")
    summary = await world.source.reload()
    assert (summary.added, summary.failed, summary.file_error) == (5, 0, ""), summary
    r = world.redis
    assert r.hget("acme.org.", "__owner__") is not None or r.exists("acme.org.")
    assert a_records(r, DOMAIN, "blog") == ["203.0.113.7"]
    shop = route(r, "shop.acme.org")
    assert shop is not None
    assert (shop["addr"], shop["httpport"], shop["tlsport"], shop["user"]) == (
        "10.0.0.8",
        8080,
        8443,
        "0",
    )
    assert (shop.get("terminate"), shop.get("proxyprotocol")) == ("http", 2)
    home = route(r, f"home.{DOMAIN}")
    assert home is not None
    assert home["clientsecret"] == SECRET
    peers = await world.link.peers()
    assert [p.public_key for p in peers] == [key]
    assert peers[0].allowed_ips == (f"{user_address(GATEWAY.seed, '0:laptop')}/128",)
    records = {
        (k.decode() if isinstance(k, bytes) else k): json.loads(v)
        for k, v in r.hgetall(RECORDS_KEY).items()
    }
    assert {n: rec["state"] for n, rec in records.items()} == dict.fromkeys(
        ["acme", "blog", "shop", "home", "laptop"], "ok"
    )
    assert records["laptop"]["result"]["ips"] == [str(user_address(GATEWAY.seed, "0:laptop"))]
    assert records["home"]["client"] == {
        "remote": "198.51.100.1:18000",
        "secret_file": str(secret_file),
    }
    assert SECRET not in json.dumps(records)  # never a secret in the records

    # Removing entries removes their records and routes; nothing else is touched.
    calls = world.source.calls
    world.write(f"""
[[subdomain]]
name = "blog"
domain = "blog.{DOMAIN}"
addresses = ["203.0.113.9"]
""")
    summary = await world.source.reload()
    assert (summary.removed, summary.updated, summary.unchanged) == (4, 1, 0), summary
    assert world.source.calls - calls == 4 + 1 + 1  # 4 removals, 1 provision, 1 stale address
    assert a_records(r, DOMAIN, "blog") == ["203.0.113.9"]
    assert route(r, "shop.acme.org") is None
    assert route(r, f"home.{DOMAIN}") is None
    assert not r.exists("acme.org.")
    assert not await world.link.peers()
    assert set(r.hkeys(RECORDS_KEY)) == {b"blog"}


async def test_thousand_entries_then_a_hundred_changes_touch_only_those(world: World) -> None:
    world.write(subdomains(1000))
    summary = await world.source.reload()
    assert summary.added == 1000
    assert summary.failed == 0
    assert world.source.calls == 1000
    # 40 changed, 30 removed, 30 added
    text = subdomains(1000)
    entries = text.split("[[subdomain]]\n")[1:]
    kept = entries[:970]
    for i in range(40):
        kept[i] = kept[i].replace("203.0.113.7", "203.0.113.8")
    new = subdomains(30, prefix="n")
    world.write("".join("[[subdomain]]\n" + e for e in kept) + new)
    calls = world.source.calls
    summary = await world.source.reload()
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (
        30,
        40,
        30,
        930,
    ), summary
    # One provision per added or changed entry, one decommission per removed one, and one
    # to drop each changed entry's old address.
    assert world.source.calls - calls == 30 + 40 + 30 + 40
    r = world.redis
    assert a_records(r, DOMAIN, "s0") == ["203.0.113.8"]
    assert a_records(r, DOMAIN, "s100") == ["203.0.113.7"]
    assert a_records(r, DOMAIN, "s999") == []
    assert a_records(r, DOMAIN, "n29") == ["203.0.113.7"]
    assert r.hlen(RECORDS_KEY) == 1000
    # The same file again: nothing to do.
    calls = world.source.calls
    summary = await world.source.reload()
    assert summary.unchanged == 1000
    assert world.source.calls == calls


async def test_a_bad_file_changes_nothing_and_says_why(world: World) -> None:
    world.write(subdomains(2))
    await world.source.reload()
    world.write(subdomains(1) + "[[subdomain\nname = 'x'")
    summary = await world.source.reload()
    assert "not valid TOML" in summary.file_error
    assert a_records(world.redis, DOMAIN, "s1") == ["203.0.113.7"]
    state = state_of_file(world.redis)
    assert "not valid TOML" in state["error"]
    assert state["loaded"] > 0
    world.write(subdomains(1))
    summary = await world.source.reload()
    assert summary.removed == 1
    assert not summary.file_error
    assert state_of_file(world.redis)["error"] == ""


async def test_a_bad_entry_is_refused_the_others_served(world: World) -> None:
    world.write(
        subdomains(1)
        + f'[[proxy]]\nname = "shop"\ndomain = "shop.{DOMAIN}"\naddress = "127.0.0.1"\n'
        + "port = 80\nport_tls = 443\n"
    )
    summary = await world.source.reload()
    assert (summary.added, summary.failed) == (1, 1)
    record = read_record(world.redis, "shop")
    assert record["state"] == "error"
    assert record["message"].startswith(f"{world.path}: proxy \"shop\": field 'address': ")
    assert "loopback" in record["message"]
    assert route(world.redis, f"shop.{DOMAIN}") is None


async def test_restart_with_a_changed_file_removes_what_disappeared(world: World) -> None:
    world.write(subdomains(3))
    await world.source.reload()
    world.write(subdomains(1))  # edited while the agent was down
    source = world.fresh_source()
    await source.load_records()
    summary = await source.reload("start")
    assert (summary.removed, summary.unchanged, source.calls) == (2, 1, 2)
    assert a_records(world.redis, DOMAIN, "s2") == []
    assert a_records(world.redis, DOMAIN, "s0") == ["203.0.113.7"]


async def test_names_are_shared_with_explorer_users_through_ownership(world: World) -> None:
    def proxy(domain: str) -> Reservation:
        data = gojson.marshal({"domain": domain, "addr": "10.0.0.9", "port": 80, "port_tls": 443})
        return Reservation(id="7-1", user_id="7", type="proxy", data=data)

    # An explorer user holds a name: the file's entry gets a clear error, the user keeps it.
    await world.explorer_proxy.provision(proxy(f"taken.{DOMAIN}"))
    world.write(
        f'[[proxy]]\nname = "taken"\ndomain = "taken.{DOMAIN}"\naddress = "10.0.0.8"\n'
        "port = 80\nport_tls = 443\n"
        f'[[proxy]]\nname = "mine"\ndomain = "mine.{DOMAIN}"\naddress = "10.0.0.8"\n'
        "port = 80\nport_tls = 443\n"
    )
    summary = await world.source.reload()
    assert (summary.added, summary.failed) == (1, 1)
    record = read_record(world.redis, "taken")
    assert record["state"] == "error"
    assert "field 'domain'" in record["message"]
    assert "used by another user" in record["message"]
    assert route(world.redis, f"taken.{DOMAIN}")["user"] == "7"  # type: ignore[index]
    # A name the file holds can never be taken by an explorer user.
    with pytest.raises(ProvisionError, match="used by another user"):
        await world.explorer_proxy.provision(proxy(f"mine.{DOMAIN}"))
    assert route(world.redis, f"mine.{DOMAIN}")["user"] == "0"  # type: ignore[index]


async def test_an_entry_refused_for_a_held_name_is_applied_once_the_holder_lets_go(
    world: World,
) -> None:
    def proxy(domain: str) -> Reservation:
        data = gojson.marshal({"domain": domain, "addr": "10.0.0.9", "port": 80, "port_tls": 443})
        return Reservation(id="7-1", user_id="7", type="proxy", data=data)

    held = proxy(f"taken.{DOMAIN}")
    await world.explorer_proxy.provision(held)
    world.write(
        f'[[proxy]]\nname = "taken"\ndomain = "taken.{DOMAIN}"\naddress = "10.0.0.8"\n'
        "port = 80\nport_tls = 443\n"
        # refused for another reason (no key for the tunnel secret): never retried alone
        f'[[reverse_proxy]]\nname = "tunnel"\ndomain = "tunnel.{DOMAIN}"\n'
        f'secret = "{SECRET}"\n'
    )
    summary = await world.source.reload()
    assert summary.failed == 2, summary
    assert world.source.held == {"taken"}

    # Still held: the retry refuses it again, quietly, and changes nothing.
    again = await world.source.retry_held()
    assert (again.added, again.failed) == (0, 1)
    assert read_record(world.redis, "taken")["state"] == "error"
    assert route(world.redis, f"taken.{DOMAIN}")["user"] == "7"  # type: ignore[index]

    # The user lets go: the next retry gives the name to the file, without a reload.
    await world.explorer_proxy.decommission(held)
    reloads, calls = world.source.reloads, world.source.calls
    done = await world.source.retry_held()
    assert (done.added, done.failed) == (1, 0)
    assert world.source.reloads == reloads
    assert world.source.calls == calls + 1  # the held entry only, not the other refused one
    assert world.source.held == set()
    record = read_record(world.redis, "taken")
    assert (record["state"], record["message"], record["applied"]) == ("ok", "", True)
    assert route(world.redis, f"taken.{DOMAIN}")["user"] == "0"  # type: ignore[index]
    assert read_record(world.redis, "tunnel")["state"] == "error"

    # An entry removed from the file while refused is not retried.
    await world.explorer_proxy.provision(proxy(f"other.{DOMAIN}"))
    world.write(
        f'[[proxy]]\nname = "other"\ndomain = "other.{DOMAIN}"\naddress = "10.0.0.8"\n'
        "port = 80\nport_tls = 443\n"
    )
    await world.source.reload()
    assert world.source.held == {"other"}
    world.write("")
    await world.source.reload()
    assert world.source.held == set()
