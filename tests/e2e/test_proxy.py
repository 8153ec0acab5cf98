"""The router as users see it: HTTP by Host on :80, TLS by SNI on :443, to a public backend."""

from __future__ import annotations

from tests.support.gateway import (
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    NATC_ADDR,
    NATC_HTTP_PORT,
    REDIS_PORT,
    Gateway,
    wait_for,
)
from tests.support.sites import assert_served_by, publish_site


def test_http_host_and_tls_sni_reach_the_backend(gateway: Gateway, label: str) -> None:
    name = f"{label}.{MANAGED_DOMAIN}"
    publish_site(gateway, gateway.add_user(), name)

    wait_for(lambda: gateway.http(name).status == 200, what=f"http {name}")
    assert_served_by(gateway, name, site="backend", cert="backend")


def test_unknown_name_is_refused(gateway: Gateway, label: str) -> None:
    name = f"{label}.{MANAGED_DOMAIN}"
    assert gateway.refused(name)
    assert gateway.refused(name, tls=True)


def test_forbidden_targets_get_an_error_and_no_route(gateway: Gateway, label: str) -> None:
    user = gateway.add_user()
    targets = {
        "loopback": ("127.0.0.1", REDIS_PORT),
        "redis": (GW_CLIENT_ADDR, REDIS_PORT),
    }
    for kind, (addr, port) in targets.items():
        name = f"{kind}-{label}.{MANAGED_DOMAIN}"
        sid = gateway.create("subdomain", user, domain=name, ips=[GW_CLIENT_ADDR])
        assert gateway.wait_result(sid).state == "ok"
        pid = gateway.create("proxy", user, domain=name, addr=addr, port=port, port_tls=port)
        result = gateway.wait_result(pid)
        assert result.state == "error", f"{kind}: {result}"
        assert result.message
        assert gateway.refused(name), f"{kind}: the router must not route {name}"
        assert not gateway.redis_keys(f"/tcprouter/service/{name}")


def test_another_user_cannot_take_over_a_proxied_name(gateway: Gateway, label: str) -> None:
    name = f"{label}.{MANAGED_DOMAIN}"
    publish_site(gateway, gateway.add_user(), name)
    wait_for(lambda: gateway.http(name).status == 200, what=f"http {name}")

    intruder = gateway.add_user()
    pid = gateway.create("proxy", intruder, domain=name, addr=NATC_ADDR, port=NATC_HTTP_PORT)
    result = gateway.wait_result(pid)
    assert result.state == "error", result
    assert result.message
    # The error result makes the explorer ask for a delete; tearing the refused workload
    # down must not remove the owner's route either.
    gateway.wait_result(pid, state="deleted")
    assert gateway.http(name).headers["x-site"] == "backend"
