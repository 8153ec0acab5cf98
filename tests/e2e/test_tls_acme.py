"""TLS termination with certificates from a real ACME server (Pebble), end to end.

The gateway terminates TLS for explorer proxies under `gw.example` (a wildcard obtained by
DNS-01 through its own CoreDNS) and `site.example` (a certificate per name by HTTP-01 or
TLS-ALPN-01, validated by Pebble connecting to the gateway from the client namespace);
`pass.example` stays passthrough. Clients verify the chain against Pebble's root.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509

from tests.support import pebble
from tests.support.gateway import (
    CLIENT_ADDR,
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    Gateway,
    TlsReply,
    User,
    wait_for,
)
from tests.support.sites import Site, assert_served_by, publish_site

SITE = "site.example"  # HTTP-01 / TLS-ALPN-01, a certificate per name
PASS = "pass.example"  # not terminated
ROUTER_TLS: dict[str, object] = {
    "acme_profile": pebble.DEFAULT,  # Pebble picks a random profile for orders without one
    "wildcards": [MANAGED_DOMAIN],
    "challenges": ["http-01"],
    "retry_min": "2s",
    "retry_max": "20s",
    "renew_check": "1s",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    args = ["--terminate-tls", MANAGED_DOMAIN, "--terminate-tls", SITE, "--terminate-tls-redirect"]
    with Gateway(
        tmp_path_factory.mktemp("tls"),
        acme=True,
        domains=(MANAGED_DOMAIN, SITE, PASS),
        router_tls=dict(ROUTER_TLS),
        agent_extra_args=args,
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def user(gw: Gateway) -> User:
    return gw.add_user()


def serve(gw: Gateway, user: User, name: str, ip: str = GW_CLIENT_ADDR) -> Site:
    """A subdomain pointing at `ip` and a proxy to the backend."""
    return publish_site(gw, user, name, ip=ip)


def https(gw: Gateway, name: str, timeout: float = 30.0) -> TlsReply:
    """The first 200 answer over HTTPS for name that verifies against Pebble's root."""
    replies: list[TlsReply] = []

    def answered() -> bool:
        replies.append(gw.https(name, cafile=gw.pebble_root))
        return replies[-1].reply.status == 200

    wait_for(answered, timeout=timeout, what=f"HTTPS for {name} with a certificate from Pebble")
    return replies[-1]


def cert(reply: TlsReply) -> x509.Certificate:
    return x509.load_der_x509_certificate(reply.peer_cert_der)


def names(c: x509.Certificate) -> list[str]:
    return c.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)


def orders(gw: Gateway) -> int:
    """Orders Pebble has received so far."""
    return gw.procs["pebble"].log.read_text().count("to the db")


def challenges_answered(gw: Gateway, listener: str, name: str) -> float:
    """ACME validations the router answered for name (http: HTTP-01, tls: TLS-ALPN-01)."""
    pattern = (
        rf'tfrouter_connections_total\{{listener="{listener}",result="acme_challenge",'
        rf'route="{re.escape(name)}"\}} (\S+)'
    )
    found = re.search(pattern, gw.router_metrics())
    return float(found.group(1)) if found else 0.0


def dns01_lookups(gw: Gateway, zone: str) -> int:
    """Pebble's TXT queries for _acme-challenge.<zone> to the gateway's CoreDNS."""
    log = gw.procs["coredns"].log.read_text()
    return sum(1 for line in log.splitlines()
               if CLIENT_ADDR in line and f"TXT IN _acme-challenge.{zone}." in line)  # fmt: skip


def router_log(gw: Gateway) -> str:
    return gw.procs["router"].log.read_text()


def test_http01_certificate_chain_and_forwarded_headers(gw: Gateway, user: User) -> None:
    name = f"app.{SITE}"
    serve(gw, user, name)
    reply = https(gw, name)
    # terminated: the backend's plain HTTP side answered, told who connected and how
    assert reply.reply.body == f"backend http host={name}\n".encode()
    assert reply.reply.headers["x-seen-forwarded-for"] == CLIENT_ADDR
    assert reply.reply.headers["x-seen-forwarded-proto"] == "https"
    assert reply.reply.headers["x-seen-forwarded-host"] == name
    c = cert(reply)
    assert names(c) == [name]
    assert "Pebble" in c.issuer.rfc4514_string()
    assert challenges_answered(gw, "http", name) >= 1
    # plain HTTP for a terminated name: a redirect to HTTPS (--terminate-tls-redirect)
    plain = gw.http(name)
    assert plain.status == 308
    assert plain.headers["location"] == f"https://{name}/"


def test_dns01_wildcard_serves_every_name_one_label_down(gw: Gateway, user: User) -> None:
    # DNS-01 needs no A record pointing at the gateway: only the TXT its own DNS serves
    first, second = f"web.{MANAGED_DOMAIN}", f"web2.{MANAGED_DOMAIN}"
    serve(gw, user, first, ip="10.71.1.99")
    reply = https(gw, first)
    assert reply.reply.body == f"backend http host={first}\n".encode()
    assert names(cert(reply)) == [f"*.{MANAGED_DOMAIN}"]
    assert dns01_lookups(gw, MANAGED_DOMAIN) >= 1
    before = orders(gw)
    serve(gw, user, second)
    assert https(gw, second).peer_cert_der == reply.peer_cert_der
    assert orders(gw) == before, "a second name under the wildcard made a new order"
    # the challenge records are gone from the zone again
    assert not gw.redis_cli("HGET", f"{MANAGED_DOMAIN}.", "_acme-challenge").strip()
    metrics = gw.router_metrics()
    days = re.search(
        r'tfrouter_tls_certificate_expiry_days\{name="\*\.gw\.example"\} (\S+)', metrics
    )
    assert days, metrics
    assert 89 < float(days.group(1)) <= 90


def test_terminated_name_through_a_tunnel(gw: Gateway, user: User) -> None:
    name = f"home.{MANAGED_DOMAIN}"
    sid = gw.create("subdomain", user, domain=name, ips=[GW_CLIENT_ADDR])
    assert gw.wait_result(sid).state == "ok"
    secret = f"{user.id}:{secrets.token_hex(8)}"
    rid = gw.create("reverse_proxy", user, domain=name, secret=gw.encrypt_secret(user, secret))
    assert gw.wait_result(rid).state == "ok"
    gw.start_natc_site()
    gw.start_tunnel(secret)
    reply = https(gw, name)
    # the tunnel client saw plain HTTP and used its --local site
    assert reply.reply.body == f"natc-site http host={name}\n".encode()
    assert reply.reply.headers["x-seen-forwarded-for"] == CLIENT_ADDR
    assert names(cert(reply)) == [f"*.{MANAGED_DOMAIN}"]


def test_names_not_terminated_pass_through_as_before(gw: Gateway, user: User) -> None:
    name = f"plain.{PASS}"
    serve(gw, user, name)
    wait_for(lambda: gw.https(name).reply.status == 200, what=f"passthrough {name}")
    assert_served_by(gw, name, "backend", "backend")
    assert "x-seen-forwarded-for" not in gw.https(name).reply.headers


def test_failed_challenge_is_clear_and_backs_off(gw: Gateway, user: User) -> None:
    name = f"lost.{SITE}"
    # the name points at the client namespace, where nothing listens on port 80
    sid = serve(gw, user, name, ip=CLIENT_ADDR).sub_id
    assert gw.refused(name, tls=True)
    wait_for(lambda: "certificate not obtained" in router_log(gw), what="the failure logged")
    line = next(ln for ln in router_log(gw).splitlines() if "certificate not obtained" in ln)
    assert f"name={name}" in line
    assert "retry_in=2s" in line
    assert "connection refused" in line.lower(), line
    placed = orders(gw)
    # within the back-off another handshake is refused at once: no new order
    assert gw.refused(name, tls=True)
    assert orders(gw) == placed

    # after it, the next handshake makes one more attempt, and the back-off doubles
    def retried() -> bool:
        gw.refused(name, tls=True)
        return "retry_in=4s" in router_log(gw)

    wait_for(retried, timeout=15, interval=0.5, what="the second attempt")
    assert orders(gw) == placed + 1
    # the owner points the name at the gateway: the next attempt succeeds
    gw.delete(sid)
    gw.wait_result(sid, state="deleted")
    sid = gw.create("subdomain", user, domain=name, ips=[GW_CLIENT_ADDR])
    assert gw.wait_result(sid).state == "ok"
    reply = https(gw, name, timeout=30)
    assert names(cert(reply)) == [name]


def test_restart_reuses_the_stored_certificate(gw: Gateway, user: User) -> None:
    name = f"keep.{SITE}"
    serve(gw, user, name)
    first = https(gw, name)
    placed = orders(gw)
    gw.restart_router()
    again = https(gw, name)
    assert again.peer_cert_der == first.peer_cert_der
    assert orders(gw) == placed
    assert "certificate loaded from storage" in router_log(gw)


def test_certificate_of_a_removed_route_is_no_longer_maintained(gw: Gateway, user: User) -> None:
    name = f"gone.{SITE}"
    site = serve(gw, user, name)
    https(gw, name)
    assert f'tfrouter_tls_certificate_expiry_days{{name="{name}"}}' in gw.router_metrics()
    gw.delete(site.proxy_id)
    gw.wait_result(site.proxy_id, state="deleted")
    # within a renew_check (1 s here) the router stops renewing it and stops reporting it
    wait_for(lambda: f'name="{name}"' not in gw.router_metrics(), what="the certificate dropped")
    assert "certificates no longer maintained: routes gone" in router_log(gw)


def restart_router_with(gw: Gateway, **keys: object) -> None:
    gw.router_tls = {**ROUTER_TLS, **keys}
    gw.restart_router()


def test_tls_alpn01(gw: Gateway, user: User) -> None:
    name = f"alpn.{SITE}"
    restart_router_with(gw, challenges=["tls-alpn-01"])
    try:
        serve(gw, user, name)
        assert names(cert(https(gw, name))) == [name]
        assert challenges_answered(gw, "tls", name) >= 1
        assert challenges_answered(gw, "http", name) == 0
    finally:
        restart_router_with(gw)


def test_short_lived_certificate_is_renewed_before_it_expires(gw: Gateway, user: User) -> None:
    name = f"short.{SITE}"
    restart_router_with(gw, acme_profile=pebble.SHORT_LIVED)
    try:
        serve(gw, user, name)
        first = cert(https(gw, name))
        assert first.not_valid_after_utc - first.not_valid_before_utc <= timedelta(
            seconds=pebble.SHORT_LIFETIME + 1
        )
        renewed: list[x509.Certificate] = []

        def new_certificate() -> bool:
            c = cert(gw.https(name, cafile=gw.pebble_root))
            if c.serial_number == first.serial_number:
                return False
            renewed.append(c)
            return True

        wait_for(new_certificate, timeout=pebble.SHORT_LIFETIME, interval=0.5,
                 what="a renewed certificate")  # fmt: skip
        # renewed while the first was still valid
        assert renewed[0].not_valid_before_utc < first.not_valid_after_utc
        assert time.time() < first.not_valid_after_utc.timestamp() + 1
        assert "certificate renewed" in router_log(gw)
    finally:
        restart_router_with(gw)
