"""Proxy and reverse-proxy primitives against a real redis-server (data-plane spec §2.4)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from typing import Any

import nacl.bindings
import nacl.public
import nacl.secret
import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.redis_server import snapshot
from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.node.crypto import ed25519_private_to_curve25519, ed25519_public_to_curve25519
from tfgateway.node.identity import Identity
from tfgateway.primitives.dns import DNSStore, SubdomainProvisioner
from tfgateway.primitives.name_proofs import NameProofs
from tfgateway.primitives.provisioner import ProvisionError
from tfgateway.primitives.proxy import ProxyProvisioner, ReverseProxyProvisioner
from tfgateway.primitives.tcprouter import PROXY_CHANNEL, decode_service, encode_service
from tfgateway.primitives.termination import TerminationPolicy

pytestmark = pytest.mark.integration

GATEWAY = Identity(b"2" * 32)
USER = Identity(b"1" * 32)
SPEC_VALUE = (
    b'{"Key":"/tcprouter/service/www.example.com","Value":"eyJhZGRyIjoiMTAuMC4wLjUiLCJjbGllbnRz'
    b'ZWNyZXQiOiIiLCJ0bHNwb3J0Ijo0NDMsImh0dHBwb3J0Ijo4MCwidXNlciI6IjEyMzQifQ=="}'
)


def proxy(
    user: str, domain: Any, addr: Any, port: Any = 80, tls: Any = 443, rid: str = "1-1"
) -> Reservation:
    data = gojson.marshal({"domain": domain, "addr": addr, "port": port, "port_tls": tls})
    return Reservation(id=rid, user_id=user, type="proxy", node_id=GATEWAY.node_id, data=data)


def reverse(user: str, domain: Any, secret: Any, version: int = 0, rid: str = "2-1") -> Reservation:
    data = gojson.marshal({"domain": domain, "secret": secret})
    return Reservation(
        id=rid, user_id=user, type="reverse_proxy", node_id=GATEWAY.node_id, data=data,
        version=version,
    )  # fmt: skip


def seal_v0(plain: bytes) -> str:
    """What a user's client does for version 0: a sealed box to the gateway's curve key."""
    pk = nacl.public.PublicKey(ed25519_public_to_curve25519(GATEWAY.public_key))
    return bytes(nacl.public.SealedBox(pk).encrypt(plain)).hex()


def seal_v1(plain: bytes, user: Identity = USER) -> str:
    shared = nacl.bindings.crypto_scalarmult(
        ed25519_private_to_curve25519(user), ed25519_public_to_curve25519(GATEWAY.public_key)
    )
    box = nacl.secret.SecretBox(hashlib.blake2b(shared, digest_size=32).digest())
    return bytes(box.encrypt(plain)).hex()  # nonce ‖ ciphertext


async def user_key(tid: int) -> bytes:
    if tid == 1234:
        return USER.public_key
    raise LookupError(f"user {tid} not in the phonebook")


def test_encode_service_is_the_spec_example_byte_for_byte() -> None:
    value = encode_service(
        "www.example.com", addr="10.0.0.5", tls_port=443, http_port=80, user="1234"
    )
    assert value == SPEC_VALUE
    assert decode_service(value) == {
        "addr": "10.0.0.5", "clientsecret": "", "tlsport": 443, "httpport": 80, "user": "1234",
    }  # fmt: skip
    assert decode_service(b"garbage") is None
    assert decode_service(b'{"Key":"x","Value":"!!"}') is None


async def test_proxy_provision_writes_go_bytes_and_publishes(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    prov = ProxyProvisioner(
        aredis, GATEWAY.node_id, allow_private=True, proofs=NameProofs.first_come(aredis)
    )
    pubsub = aredis.pubsub()
    await pubsub.subscribe(PROXY_CHANNEL)
    await pubsub.get_message(timeout=1)
    r = proxy("1234", "WWW.Example.com.", "10.0.0.5")
    assert await prov.provision(r) is None
    assert redis_db.get("/tcprouter/service/www.example.com") == SPEC_VALUE
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert msg is not None
    assert msg["data"] == b"www.example.com"
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    before = snapshot(redis_db)
    await prov.provision(r)  # idempotent
    assert snapshot(redis_db) == before
    await prov.decommission(r)
    assert redis_db.exists("/tcprouter/service/www.example.com") == 0
    await prov.decommission(r)  # idempotent


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("localhost", "not an IP address"),
        ("redis.internal:6379", "not an IP address"),
        ("10.0.0.5", "private"),
        ("100.64.1.1", "private"),
        ("fd12::1", "private"),
        ("185.69.166.1", "address of this gateway"),
        ("", "cannot be empty"),
        (5, "must be a string"),
    ],
)
async def test_proxy_targets_that_reach_the_gateway_are_refused(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, addr: Any, message: str
) -> None:
    prov = ProxyProvisioner(
        aredis,
        GATEWAY.node_id,
        own_addresses=["185.69.166.1"],
        proofs=NameProofs.first_come(aredis),
    )
    with pytest.raises(ProvisionError, match=message):
        await prov.provision(proxy("1234", "www.example.com", addr))
    assert snapshot(redis_db) == {}


@pytest.mark.parametrize(
    ("domain", "port", "tls", "message"),
    [
        ("", 80, 443, "cannot be empty"),
        ("*.example.com", 80, 443, "wildcards"),
        ("bücher.example", 80, 443, "punycode"),
        ("www.example.com", 70000, 443, "port"),
        ("www.example.com", -1, 443, "port"),
        ("www.example.com", "80", 443, "port"),
        ("www.example.com", 0, 0, "needs port"),
    ],
)
async def test_bad_proxy_data(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, domain: str, port: Any, tls: Any,
    message: str,
) -> None:  # fmt: skip
    prov = ProxyProvisioner(aredis, GATEWAY.node_id, proofs=NameProofs.first_come(aredis))
    with pytest.raises(ProvisionError, match=message):
        await prov.provision(proxy("1234", domain, "8.8.8.8", port, tls))
    assert snapshot(redis_db) == {}


async def test_proxy_takeover_is_refused(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    prov = ProxyProvisioner(aredis, GATEWAY.node_id, proofs=NameProofs.first_come(aredis))
    rev = ReverseProxyProvisioner(aredis, GATEWAY, user_key, proofs=NameProofs.first_come(aredis))
    await prov.provision(proxy("1234", "www.example.com", "8.8.8.8"))
    before = snapshot(redis_db)
    with pytest.raises(ProvisionError, match="used by another user"):
        await prov.provision(proxy("99", "www.example.com", "6.6.6.6"))
    with pytest.raises(ProvisionError, match="used by another user"):
        await rev.provision(reverse("99", "www.example.com", seal_v0(b"99:x")))
    await prov.decommission(proxy("99", "www.example.com", "6.6.6.6"))
    await rev.decommission(reverse("99", "WWW.example.com", ""))
    assert snapshot(redis_db) == before


async def test_proxy_and_dns_ownership_are_one(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    store = DNSStore(
        aredis, GATEWAY.node_id, ["ns1.gw.example.com"], proofs=NameProofs.first_come(aredis)
    )
    await store.setup_managed_domains(["gw.example.com"])
    sub = SubdomainProvisioner(store)
    prov = ProxyProvisioner(aredis, GATEWAY.node_id, proofs=NameProofs.first_come(aredis))
    sub_r = Reservation(
        id="5-1", user_id="42", type="subdomain",
        data=gojson.marshal({"domain": "app.gw.example.com", "destination": ["185.69.166.1"]}),
    )  # fmt: skip
    await sub.provision(sub_r)
    with pytest.raises(ProvisionError, match="belongs to another user"):
        await prov.provision(proxy("99", "app.gw.example.com", "6.6.6.6"))
    await prov.provision(proxy("42", "app.gw.example.com", "8.8.8.8"))
    with pytest.raises(ProvisionError, match="managed by this gateway"):
        await prov.provision(proxy("42", "gw.example.com", "8.8.8.8"))
    # and the other way round: a name proxied by one user cannot become another's subdomain
    await prov.provision(proxy("7", "free.gw.example.com", "8.8.4.4"))
    with pytest.raises(ProvisionError, match="another user's proxy"):
        await sub.provision(
            Reservation(
                id="6-1",
                user_id="42",
                type="subdomain",
                data=gojson.marshal({"domain": "free.gw.example.com", "destination": ["1.1.1.1"]}),
            )
        )
    assert redis_db.hget("managed_domains", "free.gw.example.com") is None


async def test_reverse_proxy_v0_and_v1(aredis: redis.asyncio.Redis, redis_db: redis.Redis) -> None:
    rev = ReverseProxyProvisioner(aredis, GATEWAY, user_key, proofs=NameProofs.first_come(aredis))
    await rev.provision(reverse("1234", "tunnel.example.com", seal_v0(b"1234:s3cret")))
    value = redis_db.get("/tcprouter/service/tunnel.example.com")
    assert value == encode_service("tunnel.example.com", secret="1234:s3cret", user="1234")
    inner = json.loads(base64.b64decode(json.loads(value or b"")["Value"]))
    assert inner == {
        "addr": "", "clientsecret": "1234:s3cret", "tlsport": 0, "httpport": 0, "user": "1234",
    }  # fmt: skip
    await rev.provision(reverse("1234", "tunnel2.example.com", seal_v1(b"1234:other"), 2, "3-1"))
    service = decode_service(redis_db.get("/tcprouter/service/tunnel2.example.com") or b"")
    assert service is not None
    assert service["clientsecret"] == "1234:other"
    await rev.decommission(reverse("1234", "tunnel.example.com", "whatever"))
    assert redis_db.exists("/tcprouter/service/tunnel.example.com") == 0


@pytest.mark.parametrize(
    ("r", "message"),
    [
        (reverse("1234", "", seal_v0(b"1234:x")), "^domain cannot be empty$"),
        (reverse("1234", "t.example.com", ""), "^secret cannot be empty$"),
        (
            reverse("1234", "t.example.com", seal_v0(b"99:x")),
            "^secret must follow the format 'threebotID:random'$",
        ),
        (
            reverse("1234", "t.example.com", seal_v0(b"12345:x")),
            "^secret must follow the format 'threebotID:random'$",
        ),
        (reverse("1234", "t.example.com", "00"), "^failed to decrypt secret: invalid cipher"),
        (reverse("1234", "t.example.com", "00", 1), "^failed to decrypt secret: invalid cipher"),
        (reverse("1234", "t.example.com", "00" * 23, 3), "invalid cipher text too short"),
        (
            reverse("1234", "t.example.com", "00" * 80),
            "^failed to decrypt secret: decryption error$",
        ),
        (
            reverse("1234", "t.example.com", seal_v1(b"1234:x", Identity(b"3" * 32)), 1),
            "^failed to decrypt secret: decryption error$",
        ),
        (reverse("1234", "t.example.com", "xyz"), "^failed to decrypt secret: secret is not"),
        (reverse("777", "t.example.com", seal_v1(b"777:x"), 1), "public key of user 777"),
        (reverse("1234", "t.example.com", seal_v0(b"1234:\xff")), "not valid UTF-8"),
        (reverse("1234", "t_x.example.com", seal_v0(b"1234:x")), "underscores"),
        (reverse("1234", "t.example.com", 5), "must be a string"),
    ],
)
async def test_reverse_proxy_refusals(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, r: Reservation, message: str
) -> None:
    rev = ReverseProxyProvisioner(aredis, GATEWAY, user_key, proofs=NameProofs.first_come(aredis))
    with pytest.raises(ProvisionError, match=message):
        await rev.provision(r)
    assert snapshot(redis_db) == {}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    domain=st.one_of(st.text(max_size=30), st.from_regex(r"[a-z.*_-]{1,10}\.example\.com")),
    addr=st.one_of(st.text(max_size=20), st.ip_addresses().map(str)),
    secret=st.one_of(st.text(max_size=40), st.binary(max_size=60).map(bytes.hex)),
    version=st.integers(min_value=0, max_value=3),
    user=st.sampled_from(["1234", "99"]),
)
async def test_hostile_proxies_never_crash_or_take_over(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis, domain: str, addr: str, secret: str,
    version: int, user: str,
) -> None:  # fmt: skip
    redis_db.set("/tcprouter/service/owned.example.com", encode_service(
        "owned.example.com", addr="8.8.8.8", http_port=80, user="7"))  # fmt: skip
    before = redis_db.get("/tcprouter/service/owned.example.com")
    prov = ProxyProvisioner(aredis, GATEWAY.node_id, proofs=NameProofs.first_come(aredis))
    rev = ReverseProxyProvisioner(aredis, GATEWAY, user_key, proofs=NameProofs.first_come(aredis))
    for p, r in ((prov, proxy(user, domain, addr)), (rev, reverse(user, domain, secret, version))):
        with contextlib.suppress(ProvisionError):
            await p.provision(r)
        await p.decommission(r)
    assert redis_db.get("/tcprouter/service/owned.example.com") == before
    for key in redis_db.keys("/tcprouter/service/*"):
        service = decode_service(redis_db.get(key) or b"")
        assert service is not None
        if service["addr"]:
            assert not service["addr"].startswith(("127.", "169.254.", "10.", "::1"))


async def test_own_addresses_are_read_live(aredis: redis.asyncio.Redis) -> None:
    own: list[str] = []
    prov = ProxyProvisioner(
        aredis, GATEWAY.node_id, own_addresses=own, proofs=NameProofs.first_come(aredis)
    )
    await prov.provision(proxy("1234", "a.example.com", "185.69.166.7"))
    own.append("185.69.166.7")  # the host gained this address after start-up
    with pytest.raises(ProvisionError, match="address of this gateway"):
        await prov.provision(proxy("1234", "b.example.com", "185.69.166.7"))


async def test_entry_written_by_the_go_daemon(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    redis_db.set("/tcprouter/service/www.example.com", SPEC_VALUE)  # Go bytes, user 1234
    prov = ProxyProvisioner(
        aredis, GATEWAY.node_id, allow_private=True, proofs=NameProofs.first_come(aredis)
    )
    with pytest.raises(ProvisionError, match="used by another user"):
        await prov.provision(proxy("99", "www.example.com", "8.8.8.8"))
    await prov.decommission(proxy("99", "www.example.com", "8.8.8.8"))
    assert redis_db.get("/tcprouter/service/www.example.com") == SPEC_VALUE
    await prov.provision(proxy("1234", "www.example.com", "10.0.0.5"))  # same bytes again
    assert redis_db.get("/tcprouter/service/www.example.com") == SPEC_VALUE
    await prov.decommission(proxy("1234", "www.example.com", "10.0.0.5"))
    assert redis_db.exists("/tcprouter/service/www.example.com") == 0


async def test_terminate_tls_policy_marks_routes_under_its_domains(
    aredis: redis.asyncio.Redis, redis_db: redis.Redis
) -> None:
    policy = TerminationPolicy(("gw.example",), redirect=True)
    proofs = NameProofs.first_come(aredis)
    prov = ProxyProvisioner(
        aredis, GATEWAY.node_id, allow_private=True, proofs=proofs, termination=policy
    )
    rev = ReverseProxyProvisioner(aredis, GATEWAY, user_key, proofs=proofs, termination=policy)
    await prov.provision(proxy("1234", "web.gw.example", "10.0.0.5"))
    await prov.provision(proxy("1234", "tlsonly.gw.example", "10.0.0.5", port=0))
    await prov.provision(proxy("1234", "www.example.com", "10.0.0.5"))
    await rev.provision(reverse("1234", "home.gw.example", seal_v0(b"1234:s"), rid="2-9"))
    fields = {
        name: decode_service(redis_db.get(f"/tcprouter/service/{name}") or b"")
        for name in ("web.gw.example", "tlsonly.gw.example", "www.example.com", "home.gw.example")
    }
    terminated = {"terminate": "http", "redirect": True}
    assert fields["web.gw.example"] == {
        "addr": "10.0.0.5", "clientsecret": "", "tlsport": 443, "httpport": 80, "user": "1234",
        **terminated,
    }  # fmt: skip
    assert fields["home.gw.example"] == {
        "addr": "", "clientsecret": "1234:s", "tlsport": 0, "httpport": 0, "user": "1234",
        **terminated,
    }  # fmt: skip
    # the backend speaks TLS only, or the name is outside the domains: the Go daemon's bytes
    assert "terminate" not in (fields["tlsonly.gw.example"] or {})
    assert redis_db.get("/tcprouter/service/www.example.com") == encode_service(
        "www.example.com", addr="10.0.0.5", tls_port=443, http_port=80, user="1234"
    )
