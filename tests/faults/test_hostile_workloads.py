"""More than 1,000 hostile workloads (tests.support.hostile) fed through the development
explorer to the real agent program (issue 8 point 4): no crash, each answered with an error
result carrying a clear message, nothing of the victim (another user) touched: every redis key
of the data plane is byte-identical before and after. A property test (hypothesis, derandomized)
checks the validation layer the same corpus exercises.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.agent_process import AgentProcess
from tests.support.devexplorer import DevExplorerProcess, SyncAdmin
from tests.support.hostile import Case, Setting, Victim, corpus, unanswerable
from tests.support.processes import wait_until
from tests.support.redis_server import snapshot
from tests.support.world_dns import WorldDNS
from tfgateway.model.reservation import Reservation
from tfgateway.node.identity import load_or_create
from tfgateway.primitives.fourtosix import user_public_key
from tfgateway.primitives.provisioner import ProvisionError
from tfgateway.primitives.validation import ValidationError, normalize_domain, validate_proxy_target
from tfgateway_devexplorer.user_crypto import UserKeys, encrypt_secret

pytestmark = pytest.mark.integration

MANAGED = "gw.example.com"
NAMESERVER = "ns1.gw.example.com"
OWN_ADDRESS = "185.69.166.250"
AGENT_KEYS = ("tfgateway",)  # the agent's own bookkeeping (cache, outbox, counters)


def answered(admin: SyncAdmin, agent: AgentProcess, gwids: set[str]) -> bool:
    assert agent.alive(), agent.log()[-3000:]
    got = {p["gwid"] for p in admin.state()["result_puts"]}
    return gwids <= got


def publish_victim(admin: SyncAdmin, node: str, keys: UserKeys) -> Victim:
    """A user with one workload of each type, on names of its own."""
    (user,) = admin.post("/dev/users", {"pubkey": keys.public_key_hex})
    vt = int(user["id"])
    names = {k: f"{k}.{MANAGED}" for k in ("victim", "vdns", "vproxy", "vrev")}
    vsecret = encrypt_secret(f"{vt}:victim-secret", node, version=2, user=keys)
    specs: list[dict[str, Any]] = [
        {"type": "subdomain", "domain": names["victim"], "ips": ["185.69.166.10"]},
        {"type": "proxy", "domain": names["victim"], "addr": "185.69.166.11", "port": 80,
         "port_tls": 443},
        {"type": "subdomain", "domain": names["vdns"], "ips": ["185.69.166.12"]},
        {"type": "proxy", "domain": names["vproxy"], "addr": "185.69.166.13", "port": 80},
        {"type": "domain_delegate", "domain": "victim.example.org"},
        {"type": "reverse_proxy", "domain": names["vrev"], "secret": vsecret},
    ]  # fmt: skip
    views = admin.post(
        "/dev/workloads", [{"node_id": node, "customer_tid": vt, **s} for s in specs]
    )
    return Victim(vt, names["victim"], names["vdns"], names["vproxy"], "victim.example.org",
                  names["vrev"], tuple(str(v["gwid"]) for v in views))  # fmt: skip


def publish_hostile(
    admin: SyncAdmin, node: str, attacker: int, cases: list[Case]
) -> tuple[dict[str, Case], str]:
    """The cases, then unaddressable items, then one well-behaved subdomain of the attacker:
    (gwid -> case, the well-behaved one's gwid)."""
    specs = [{"node_id": node, "customer_tid": attacker, **c.spec} for c in cases]
    hostile = admin.post("/dev/workloads", specs)
    # Items a gateway cannot address, mixed in: skipped, the batch goes on.
    for raw in unanswerable():
        admin.post("/dev/workloads", {"type": "subdomain", "node_id": node,
                                      "customer_tid": attacker, **raw})  # fmt: skip
    # A well-behaved workload published after all of it is still served.
    (last,) = admin.post("/dev/workloads", [{"type": "subdomain", "node_id": node,
                         "customer_tid": attacker, "domain": f"fine.{MANAGED}",
                         "ips": ["185.69.166.99"]}])  # fmt: skip
    gwid_of = {str(v["gwid"]): case for v, case in zip(hostile, cases, strict=True)}
    return gwid_of, str(last["gwid"])


def assert_refused_clearly(
    state: dict[str, Any], gwid_of: dict[str, Case], well_behaved: str
) -> dict[str, str]:
    """Every hostile case got error results only, each with a short printable message and no
    traceback; the well-behaved one got one ok result. Returns a message per family of cases."""
    by_gwid: dict[str, list[dict[str, Any]]] = {}
    # (items without a usable id get a PUT to "0-0" that the explorer answers 404: harmless)
    refused = [p for p in state["result_puts"] if p["status"] != 201 and p["gwid"] != "0-0"]
    assert not refused, [
        (p, gwid_of[p["gwid"]].why if p["gwid"] in gwid_of else "") for p in refused[:5]
    ]
    for put in state["result_puts"]:
        if put["status"] == 201:
            by_gwid.setdefault(put["gwid"], []).append(put["result"])
    accepted = {g: gwid_of[g].why for g in gwid_of if any(r["state"] != 0 for r in by_gwid[g])}
    assert not accepted, f"hostile workloads accepted: {Counter(accepted.values())}"
    messages: dict[str, str] = {}
    for g, case in gwid_of.items():
        for result in by_gwid[g]:
            msg = result["message"]
            assert msg, case.why
            assert msg.isprintable(), (case.why, msg[:800])
            assert len(msg) <= 600, (case.why, msg[:800])
            assert "Traceback" not in msg, (case.why, msg)
            assert "Exception" not in msg, (case.why, msg)
            messages.setdefault(case.why.split(" (+")[0], msg)
    assert [r["state"] for r in by_gwid[well_behaved]] == [1]
    return messages


def assert_victim_untouched(
    r: redis.Redis, before: dict[bytes, Any], reservations_before: dict[bytes, bytes]
) -> None:
    """Every data-plane key byte-identical to `before`; nothing new but the attacker's
    well-behaved subdomain; the agent's cache entries of the victim unchanged."""
    after = snapshot(r, skip=AGENT_KEYS)
    for key, value in before.items():
        now = after.get(key)
        if isinstance(value, dict) and isinstance(now, dict):
            # a shared hash (zone, managed_domains): the victim's fields unchanged, the
            # only new field the attacker's well-behaved subdomain
            assert {f: now.get(f) for f in value} == value, key
            assert all(b"fine" in f for f in set(now) - set(value)), (key, set(now))
        else:
            assert now == value, (key, value, now)
    assert not set(after) - set(before), set(after) - set(before)
    reservations_after: dict[bytes, bytes] = r.hgetall("tfgateway_reservations")  # type: ignore[assignment]
    for field, entry in reservations_before.items():
        assert reservations_after.get(field) == entry, field


def test_a_thousand_hostile_workloads(
    tmp_path: Path,
    explorer: DevExplorerProcess,
    redis_url: str,
    redis_db: redis.Redis,
    world_dns: WorldDNS,
) -> None:
    agent = AgentProcess(
        seed=tmp_path / "identity.seed",
        explorer_url=explorer.url,
        redis_url=redis_url,
        log_file=tmp_path / "agent.log",
        domains=[MANAGED],
        nameservers=[NAMESERVER],
        poll_interval=0.05,
        extra=["--gateway-address", OWN_ADDRESS],
        proof_resolver=world_dns.resolver,
    )
    node = load_or_create(agent.seed).node_id
    admin = SyncAdmin(explorer.admin_url, timeout=60)
    attacker_keys = UserKeys(b"a" * 32)
    victim = publish_victim(admin, node, UserKeys(b"v" * 32))
    world_dns.publish_proof(victim.zone, victim.tid)  # the victim owns its delegated domain
    (attacker,) = admin.post("/dev/users", {"pubkey": attacker_keys.public_key_hex})
    at = int(attacker["id"])
    agent.start()
    try:
        wait_until(lambda: answered(admin, agent, set(victim.gwids)), timeout=30,
                   what="the victim's workloads")  # fmt: skip
        state = admin.state()
        assert all(p["result"]["state"] == 1 for p in state["result_puts"]), state["result_puts"]
        before = snapshot(redis_db, skip=AGENT_KEYS)
        reservations_before: dict[bytes, bytes] = redis_db.hgetall("tfgateway_reservations")  # type: ignore[assignment]
        assert len(before) >= 5

        setting = Setting(node_id=node, managed=MANAGED, nameserver=NAMESERVER,
                          own_address=OWN_ADDRESS, attacker=at, attacker_keys=attacker_keys,
                          victim=victim)  # fmt: skip
        cases = corpus(setting, seed=8, size=1000)
        assert len(cases) >= 1000
        started = time.monotonic()
        gwid_of, well_behaved = publish_hostile(admin, node, at, cases)
        wait_until(
            lambda: answered(admin, agent, set(gwid_of) | {well_behaved}),
            timeout=150, interval=0.5, what="every hostile workload answered",
        )  # fmt: skip
        elapsed = time.monotonic() - started
        messages = assert_refused_clearly(admin.state(), gwid_of, well_behaved)
        assert agent.alive()
        # Nothing of the victim changed: every data-plane key is byte-identical.
        wait_until(lambda: redis_db.hlen("tfgateway:outbox") == 0, timeout=60,
                   what="outbox drained")  # fmt: skip
        assert_victim_untouched(redis_db, before, reservations_before)
        print(f"\n{len(cases)} hostile workloads answered in {elapsed:.1f}s; messages:")
        for why, msg in sorted(messages.items()):
            print(f"  {why}: {msg[:110]}")
    finally:
        agent.stop()


# -- the validation layer, property-based -----------------------------------------------------

LDH = "abcdefghijklmnopqrstuvwxyz0123456789-"


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.one_of(st.text(max_size=300), st.from_regex(r"[a-zA-Z0-9._*\-]{0,80}", fullmatch=True)))
def test_normalize_domain_accepts_only_canonical_ldh(value: str) -> None:
    try:
        out = normalize_domain(value)
    except ValidationError as exc:
        if not str(exc):
            raise AssertionError("an empty error message") from exc
        return
    assert out.isascii()
    assert out == out.lower()
    assert len(out) <= 253
    for label in out.split("."):
        assert 1 <= len(label) <= 63, out
        assert set(label) <= set(LDH), out
        assert not label.startswith("-"), out
        assert not label.endswith("-"), out


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.builds(lambda n: f"::ffff:{ipaddress.IPv4Address(n)}", st.integers(0, 2**32 - 1)),
        st.text(max_size=50),
    )
)
def test_proxy_targets_never_reach_the_gateway(value: str) -> None:
    try:
        ip = validate_proxy_target(value, own_addresses=[OWN_ADDRESS])
    except ValidationError as exc:
        if not str(exc):
            raise AssertionError("an empty error message") from exc
        return
    inner = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    for candidate in (ip, inner):
        if candidate is None:
            continue
        assert candidate.is_global, value
        assert not (candidate.is_loopback)
        assert not (candidate.is_link_local)
        assert not (candidate.is_multicast)
        assert str(candidate) != OWN_ADDRESS


def test_corpus_is_deterministic() -> None:
    from tfgateway.node.identity import Identity

    node = Identity(b"n" * 32).node_id
    s = Setting(node, MANAGED, NAMESERVER, OWN_ADDRESS, 9, UserKeys(b"a" * 32),
                Victim(7, "a.x", "b.x", "c.x", "d.org", "e.x"))  # fmt: skip
    first, second = corpus(s, seed=3), corpus(s, seed=3)
    # encrypted secrets use fresh nonces; everything else is identical
    strip = [json.dumps({k: v for k, v in c.spec.items() if k != "secret"}, sort_keys=True,
                        default=str) for c in first]  # fmt: skip
    again = [json.dumps({k: v for k, v in c.spec.items() if k != "secret"}, sort_keys=True,
                        default=str) for c in second]  # fmt: skip
    assert strip == again
    assert len(first) >= 1000


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode()),
        st.binary(min_size=32, max_size=32).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    )
)
def test_wireguard_keys_are_32_bytes_of_standard_base64(key: str) -> None:
    r = Reservation(id="1-1", user_id="42", type="gateway4to6",
                    data=json.dumps({"public_key": key}).encode())  # fmt: skip
    try:
        out = user_public_key(r)
    except ProvisionError as exc:
        if not str(exc).startswith("invalid "):
            raise AssertionError(f"unclear message: {exc}") from exc
        return
    assert len(base64.b64decode(out, validate=True)) == 32
