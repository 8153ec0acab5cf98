"""The gateway as the NixOS module configures it: redis, CoreDNS, the router and the agent
started from the module's kept renderings (tests/nixos/rendered/: Corefile, router.toml, the
units' command lines, redis settings), only paths and addresses substituted, serving a
workload; with the guards those files carry (redis password, recursion for allowed networks
only, health/readiness/metrics on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import dns.rcode
import pytest

from tests.support.gateway import (
    GW_CLIENT_ADDR,
    GW_NATC_ADDR,
    MANAGED_DOMAIN,
    Gateway,
    wait_for,
)
from tests.support.rendered import Rendered
from tests.support.sites import publish_site


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(tmp_path_factory.mktemp("rendered"), rendered=Rendered()) as gw:
        yield gw


def loopback_get(gateway: Gateway, port: int, path: str) -> tuple[int, str]:
    """GET on the gateway's own loopback (where the module puts health and metrics)."""
    with gateway.gw.connect("127.0.0.1", port, timeout=3.0) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_a_workload_is_served_through_the_rendered_configuration(
    gateway: Gateway, label: str
) -> None:
    name = f"{label}.{MANAGED_DOMAIN}"
    publish_site(gateway, gateway.add_user(), name)
    wait_for(lambda: [r.to_text() for r in gateway.dns(name).answer] != [], what=f"dns {name}")
    assert GW_CLIENT_ADDR in gateway.dns(name).answer[0].to_text()
    wait_for(lambda: gateway.http(name).status == 200, what=f"http {name}")
    assert gateway.http(name).body == f"backend http host={name}\n".encode()
    assert gateway.https(name).reply.body == f"backend https host={name}\n".encode()


def test_recursion_only_for_the_allowed_network(gateway: Gateway) -> None:
    # The client's network is not in recursionAllowedFrom: names outside the gateway's zones
    # are refused, its own zones answered.
    outside = gateway.dns("www.example.org")
    assert outside.rcode() == dns.rcode.REFUSED
    assert gateway.dns(f"ns1.{MANAGED_DOMAIN}", "SOA").rcode() != dns.rcode.REFUSED
    # The NATed home's network is allowed: its query goes on to forward (whose upstream is
    # a dead address here, hence SERVFAIL rather than an answer).
    allowed = gateway.dns("www.example.org", ns=gateway.natc, server=GW_NATC_ADDR)
    assert allowed.rcode() == dns.rcode.SERVFAIL, dns.rcode.to_text(allowed.rcode())


def test_health_readiness_and_metrics_on_loopback(gateway: Gateway) -> None:
    wait_for(lambda: loopback_get(gateway, 8181, "/ready")[0] == 200, what="CoreDNS ready")
    assert loopback_get(gateway, 8080, "/health") == (200, "OK")
    for port, prefix in ((9153, "coredns_"), (9111, "tfrouter_"), (9110, "tfgateway_")):
        status, body = loopback_get(gateway, port, "/metrics")
        assert status == 200
        assert prefix in body, f"no {prefix} metric on :{port}"
        # only on loopback: the public address does not answer
        assert not gateway.gw.port_open(GW_CLIENT_ADDR, port)


def test_redis_wants_the_password(gateway: Gateway) -> None:
    out = gateway.gw.run("redis-cli", "-p", "6379", "GET", "x", check=False)
    assert "NOAUTH" in out
    assert gateway.redis_cli("PING").strip() == "PONG"
