"""Restarting redis (with the appliance's persistence) or the agent keeps everything served."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import dns.rcode
import pytest

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    Gateway,
    wait_for,
)


@dataclass
class Served:
    """One of each kind of workload, live on the gateway."""

    web: str
    home: str
    zone: str


@pytest.fixture(scope="module")
def served(gateway: Gateway) -> Served:
    user = gateway.add_user()
    web, home, zone = f"web.{MANAGED_DOMAIN}", f"home.{MANAGED_DOMAIN}", "restart.example"
    gateway.publish_proof(zone, user)
    ids = [
        gateway.create("subdomain", user, domain=web, ips=[GW_CLIENT_ADDR]),
        gateway.create("subdomain", user, domain=home, ips=[GW_CLIENT_ADDR]),
        gateway.create("domain_delegate", user, domain=zone),
        gateway.create(
            "proxy", user, domain=web, addr=BACKEND_ADDR, port=BACKEND_HTTP_PORT,
            port_tls=BACKEND_TLS_PORT,
        ),
    ]  # fmt: skip
    secret = f"{user.id}:{secrets.token_hex(8)}"
    ids.append(
        gateway.create(
            "reverse_proxy", user, domain=home, secret=gateway.encrypt_secret(user, secret)
        )
    )
    for wid in ids:
        assert gateway.wait_result(wid).state == "ok"
    gateway.start_natc_site()
    gateway.start_tunnel(secret)
    return Served(web, home, zone)


def all_served(gateway: Gateway, s: Served) -> bool:
    return (
        {rd.to_text() for rrset in gateway.dns(s.web, "A").answer for rd in rrset}
        == {GW_CLIENT_ADDR}
        and gateway.dns(s.zone, "SOA").rcode() == dns.rcode.NOERROR
        and gateway.http(s.web).headers.get("x-site") == "backend"
        and gateway.https(s.web).reply.headers.get("x-site") == "backend"
        and gateway.http(s.home).headers.get("x-site") == "natc-site"
        and gateway.https(s.home).reply.headers.get("x-site") == "natc-site"
    )


def provisions_and_serves(gateway: Gateway, name: str) -> None:
    wid = gateway.create("subdomain", gateway.add_user(), domain=name, ips=["198.51.100.44"])
    assert gateway.wait_result(wid).state == "ok"
    wait_for(
        lambda: (
            {rd.to_text() for rrset in gateway.dns(name, "A").answer for rd in rrset}
            == {"198.51.100.44"}
        ),
        what=f"A {name}",
    )


def test_everything_is_served_before_restarts(gateway: Gateway, served: Served) -> None:
    wait_for(lambda: all_served(gateway, served), timeout=30, what="all workloads served")


def test_redis_restart_keeps_everything_served(gateway: Gateway, served: Served) -> None:
    wait_for(lambda: all_served(gateway, served), timeout=30, what="served before")
    gateway.restart_redis()
    wait_for(lambda: all_served(gateway, served), timeout=30, what="served after redis restart")
    # The data survived on disk (append-only file), and the agent is back on redis.
    assert gateway.redis_keys("/tcprouter/service/*")
    provisions_and_serves(gateway, f"after-redis.{MANAGED_DOMAIN}")
    gateway.check_alive()


def test_agent_restart_keeps_everything_served(gateway: Gateway, served: Served) -> None:
    wait_for(lambda: all_served(gateway, served), timeout=30, what="served before")
    gateway.restart_agent()
    wait_for(lambda: all_served(gateway, served), timeout=30, what="served after agent restart")
    # The restarted agent goes on provisioning.
    provisions_and_serves(gateway, f"after-agent.{MANAGED_DOMAIN}")
    gateway.check_alive()
