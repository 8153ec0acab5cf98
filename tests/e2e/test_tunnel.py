"""Reverse tunnel: `tftunnel` (trc v0.1.0's drop-in), in a NATed namespace, serves a site.

Upstream `trc` cannot be built here (the Go module proxy refuses tcprouter), so the user's
client is the project's trc-compatible `tftunnel`: same flags, same yamux wire protocol.
"""

from __future__ import annotations

import secrets

from tests.support.gateway import (
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    NATC_ADDR,
    NATC_HTTP_PORT,
    Gateway,
    wait_for,
)
from tests.support.sites import assert_served_by


def metric(text: str, name: str) -> float:
    """The value of one series (`name` with its labels) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def reserve_tunnelled_site(gateway: Gateway, label: str) -> tuple[str, str]:
    """A user's subdomain pointing at the gateway and a reverse proxy on it; returns the name
    and the tunnel secret (clear text, for the client)."""
    user = gateway.add_user()
    name = f"{label}.{MANAGED_DOMAIN}"
    sid = gateway.create("subdomain", user, domain=name, ips=[GW_CLIENT_ADDR])
    assert gateway.wait_result(sid).state == "ok"
    secret = f"{user.id}:{secrets.token_hex(8)}"
    rid = gateway.create(
        "reverse_proxy", user, domain=name, secret=gateway.encrypt_secret(user, secret)
    )
    assert gateway.wait_result(rid).state == "ok"
    return name, secret


def test_trc_serves_a_website_over_http_and_tls(gateway: Gateway, label: str) -> None:
    name, secret = reserve_tunnelled_site(gateway, label)
    gateway.start_natc_site()
    # The NATed home really is unreachable from outside: only the tunnel gets in.
    assert gateway.natc.port_open(NATC_ADDR, NATC_HTTP_PORT)
    assert not gateway.gw.port_open(NATC_ADDR, NATC_HTTP_PORT)
    gateway.start_tunnel(secret)

    wait_for(lambda: gateway.http(name).status == 200, timeout=20, what=f"tunnel {name}")
    assert_served_by(gateway, name, site="natc-site", cert="natc")


def test_authenticated_tunnel_serves_through_data_connections(gateway: Gateway, label: str) -> None:
    """`tftunnel --pin` behind the NAT: the router offers data connections, the client dials
    them through its NAT (same public address as its session), and the site is served over
    HTTP by Host and TLS by SNI with each connection on a data connection of its own."""
    name, secret = reserve_tunnelled_site(gateway, label)
    if not ("natc-site" in gateway.procs and gateway.procs["natc-site"].alive()):
        gateway.start_natc_site()  # (the module's first test may have started it)
    pin = gateway.tunnel_pin()
    assert pin.startswith("sha256/"), pin
    gateway.start_tunnel(secret, f"tunnel-{label}", "--pin", pin)

    ok = 'tfrouter_tunnel_data_connections_total{result="ok"}'
    before = metric(gateway.router_metrics(), ok)
    wait_for(lambda: gateway.http(name).status == 200, timeout=20, what=f"tunnel {name}")
    assert_served_by(gateway, name, site="natc-site", cert="natc")
    assert metric(gateway.router_metrics(), ok) >= before + 2
