"""What a user publishes on the whole-gateway harness (tests.support.gateway) and how a client
sees it: a site (subdomain + proxy to the public backend), DNS answers, HTTP/TLS routes."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

import dns.message
import dns.rcode
import dns.rdatatype

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    GW_CLIENT_ADDR,
    Gateway,
    User,
)

__all__ = ["Site", "assert_served_by", "nxdomain", "publish_site", "resolves", "values"]


@dataclass(frozen=True)
class Site:
    """A name with a subdomain pointing at the gateway and a proxy to the public backend."""

    name: str
    sub_id: int
    proxy_id: int


def publish_site(
    gateway: Gateway, user: User, name: str, *, wait: bool = True, ip: str = GW_CLIENT_ADDR
) -> Site:
    """What a user does: the name points at the gateway (or `ip`), the gateway proxies it to
    the backend (both results ok, unless `wait` is false)."""
    sub = gateway.create("subdomain", user, domain=name, ips=[ip])
    prx = gateway.create(
        "proxy", user, domain=name, addr=BACKEND_ADDR, port=BACKEND_HTTP_PORT,
        port_tls=BACKEND_TLS_PORT,
    )  # fmt: skip
    if wait:
        assert gateway.wait_result(sub).state == "ok"
        assert gateway.wait_result(prx).state == "ok"
    return Site(name, sub, prx)


def values(msg: dns.message.Message, rdtype: str) -> set[str]:
    """The answer's records of type `rdtype`, as text."""
    wanted = dns.rdatatype.from_text(rdtype)
    return {rd.to_text() for rrset in msg.answer if rrset.rdtype == wanted for rd in rrset}


def resolves(
    gateway: Gateway, name: str, rdtype: str = "A", expected: Set[str] = frozenset({GW_CLIENT_ADDR})
) -> bool:
    """The gateway answers `name` (NOERROR) with exactly `expected` (by default: the gateway's
    own address, where a published site points)."""
    msg = gateway.dns(name, rdtype)
    return msg.rcode() == dns.rcode.NOERROR and values(msg, rdtype) == expected


def nxdomain(gateway: Gateway, name: str) -> bool:
    return gateway.dns(name, "A").rcode() == dns.rcode.NXDOMAIN


def assert_served_by(gateway: Gateway, name: str, site: str, cert: str) -> None:
    """`name` reaches the website `site` over HTTP (by Host) and over TLS (by SNI). The router
    passes TLS through: the certificate is the site's own (`cert`), verified by the test CA."""
    reply = gateway.http(name)
    assert reply.headers["x-site"] == site
    assert reply.body == f"{site} http host={name}\n".encode()
    tls = gateway.https(name)
    assert tls.peer_cert_der == gateway.site_cert_der(cert)
    assert tls.reply.body == f"{site} https host={name}\n".encode()
