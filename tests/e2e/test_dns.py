"""DNS as a user sees it: workloads created in the explorer, answers from the client namespace."""

from __future__ import annotations

import json

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from tests.support.gateway import MANAGED_DOMAIN, NAMESERVER, Gateway, wait_for
from tests.support.sites import resolves, values


def test_managed_subdomain_resolves_a_and_aaaa(gateway: Gateway, label: str) -> None:
    user = gateway.add_user()
    name = f"{label}.{MANAGED_DOMAIN}"
    wid = gateway.create("subdomain", user, domain=name, ips=["198.51.100.7", "2001:db8::7"])
    assert gateway.wait_result(wid).state == "ok"

    wait_for(lambda: resolves(gateway, name, "A", {"198.51.100.7"}), what=f"A {name}")
    aaaa = gateway.dns(name, "AAAA")
    assert aaaa.rcode() == dns.rcode.NOERROR
    assert values(aaaa, "AAAA") == {"2001:db8::7"}
    assert aaaa.flags & dns.flags.AA, "the gateway is authoritative for its managed domain"
    # Over TCP as well (large answers and some resolvers use it).
    assert values(gateway.dns(name, "A", tcp=True), "A") == {"198.51.100.7"}


def test_miss_in_a_managed_domain_is_nxdomain_with_soa(gateway: Gateway, label: str) -> None:
    msg = gateway.dns(f"nobody-{label}.{MANAGED_DOMAIN}", "A")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    soa = [rr for rr in msg.authority if rr.rdtype == dns.rdatatype.SOA]
    assert soa, f"no SOA in the authority section (negative caching needs it): {msg}"
    assert soa[0].name.to_text() == f"{MANAGED_DOMAIN}."


def test_delegated_zone_answers_owner_apex_and_subdomains(gateway: Gateway, label: str) -> None:
    user = gateway.add_user()
    zone = f"{label}.example"
    gateway.publish_proof(zone, user)  # the zone's owner proves control
    wid = gateway.create("domain_delegate", user, domain=zone)
    assert gateway.wait_result(wid).state == "ok"

    wait_for(lambda: bool(values(gateway.dns(f"__owner__.{zone}", "TXT"), "TXT")), what="owner")
    (txt,) = values(gateway.dns(f"__owner__.{zone}", "TXT"), "TXT")
    owner = json.loads(json.loads(txt))  # TXT presentation form is a quoted string
    assert owner == {"identity": gateway.node_id, "owner": str(user.id)}

    soa = gateway.dns(zone, "SOA")
    assert soa.rcode() == dns.rcode.NOERROR
    (soa_text,) = values(soa, "SOA")
    assert soa_text.split()[0] == f"{NAMESERVER}."
    assert values(gateway.dns(zone, "NS"), "NS") == {f"{NAMESERVER}."}

    sub = f"www.{zone}"
    sid = gateway.create("subdomain", user, domain=sub, ips=["198.51.100.9"])
    assert gateway.wait_result(sid).state == "ok"
    wait_for(lambda: resolves(gateway, sub, "A", {"198.51.100.9"}), what=f"A {sub}")
    miss = gateway.dns(f"nothing.{zone}", "A")
    assert miss.rcode() == dns.rcode.NXDOMAIN
    assert any(rr.rdtype == dns.rdatatype.SOA for rr in miss.authority)


def test_second_user_cannot_take_a_taken_subdomain(gateway: Gateway, label: str) -> None:
    first, second = gateway.add_user(), gateway.add_user()
    name = f"{label}.{MANAGED_DOMAIN}"
    wid = gateway.create("subdomain", first, domain=name, ips=["198.51.100.11"])
    assert gateway.wait_result(wid).state == "ok"

    other = gateway.create("subdomain", second, domain=name, ips=["203.0.113.66"])
    result = gateway.wait_result(other)
    assert result.state == "error"
    assert result.message, "the refusal says why"
    wait_for(lambda: resolves(gateway, name, "A", {"198.51.100.11"}), what=f"A {name}")
    # After an error result the explorer asks the gateway to delete the refused workload;
    # decommissioning it must leave the first user's name alone.
    gateway.wait_result(other, state="deleted")
    assert resolves(gateway, name, "A", {"198.51.100.11"})


def test_rivals_in_one_poll_page_first_created_wins(gateway: Gateway, label: str) -> None:
    """The agent runs a page's jobs concurrently; jobs on one name still run in the explorer's
    order. Three users claim one name in a single explorer call (so in one poll page), with
    ten other names around them: the first creation wins, the later ones are refused, and the
    unrelated names are all served."""
    users = [gateway.add_user() for _ in range(3)]
    name = f"{label}.{MANAGED_DOMAIN}"
    specs: list[dict[str, object]] = [
        {"type": "subdomain", "node_id": gateway.node_id, "customer_tid": user.id,
         "domain": name, "ips": [f"198.51.100.{20 + i}"]}
        for i, user in enumerate(users)
    ]  # fmt: skip
    others = [f"{label}-n{i}.{MANAGED_DOMAIN}" for i in range(10)]
    specs += [
        {"type": "subdomain", "node_id": gateway.node_id, "customer_tid": users[1].id,
         "domain": other, "ips": ["198.51.100.30"]}
        for other in others
    ]  # fmt: skip
    infos = gateway.call(gateway.admin.create_workloads(specs))
    states = [gateway.wait_result(info.id).state for info in infos]
    assert states == ["ok", "error", "error"] + ["ok"] * 10
    wait_for(lambda: resolves(gateway, name, "A", {"198.51.100.20"}), what=f"A {name}")
    for other in others:
        assert resolves(gateway, other, "A", {"198.51.100.30"}), other
