"""Decommission: after a user deletes a workload in the explorer, the gateway stops serving it."""

from __future__ import annotations

import dns.rcode

from tests.support.gateway import MANAGED_DOMAIN, Gateway, wait_for
from tests.support.sites import nxdomain, publish_site, resolves, values


def test_decommissioned_names_stop_resolving(gateway: Gateway, label: str) -> None:
    user = gateway.add_user()
    name = f"{label}.{MANAGED_DOMAIN}"
    zone = f"{label}.example"
    sid = gateway.create("subdomain", user, domain=name, ips=["198.51.100.10"])
    gateway.publish_proof(zone, user)
    did = gateway.create("domain_delegate", user, domain=zone)
    assert gateway.wait_result(sid).state == "ok"
    assert gateway.wait_result(did).state == "ok"
    wait_for(lambda: resolves(gateway, name, "A", {"198.51.100.10"}), what=f"A {name}")
    wait_for(lambda: gateway.dns(zone, "SOA").rcode() == dns.rcode.NOERROR, what=f"SOA {zone}")

    gateway.delete(sid)
    gateway.delete(did)
    wait_for(lambda: nxdomain(gateway, name), what=f"{name} gone")
    # The delegated zone is gone entirely: the gateway no longer answers for it.
    wait_for(
        lambda: (
            gateway.dns(zone, "SOA").rcode() != dns.rcode.NOERROR
            and not values(gateway.dns(f"__owner__.{zone}", "TXT"), "TXT")
        ),
        what=f"zone {zone} gone",
    )
    assert gateway.wait_result(sid, state="deleted").state == "deleted"


def test_decommissioned_proxy_has_no_route(gateway: Gateway, label: str) -> None:
    name = f"{label}.{MANAGED_DOMAIN}"
    pid = publish_site(gateway, gateway.add_user(), name).proxy_id
    wait_for(lambda: gateway.http(name).status == 200, what=f"http {name}")

    gateway.delete(pid)
    wait_for(lambda: gateway.refused(name) and gateway.refused(name, tls=True), what="no route")
    assert gateway.wait_result(pid, state="deleted").state == "deleted"
