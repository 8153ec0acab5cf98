"""A standalone gateway (no explorer) serving a workloads file (docs/workloads.md): every kind
from the file through the real CoreDNS, router and tftunnel, live changes (file edits and
SIGHUP) without restarting redis, CoreDNS or the router, a broken file, and what
`tfgateway status` tells the operator. One gateway for the module.

4to6 needs kernel WireGuard, which only the VM has (tests/kernel); here the file's peer gets the
clear error of a gateway without --endpoint, and tests/integration/declared checks the peer and
its WireGuard config on the in-memory link."""

from __future__ import annotations

import base64
import json
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import dns.rdatatype
import pytest

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    TUNNEL_PORT,
    Gateway,
    wait_for,
)
from tests.support.sites import assert_served_by
from tests.support.wireguard import new_key

pytestmark = pytest.mark.timeout(180)
SHOP = f"shop.{MANAGED_DOMAIN}"

BASE = f"""
[[subdomain]]
name = "www"
domain = "www.{MANAGED_DOMAIN}"
addresses = ["{GW_CLIENT_ADDR}", "2001:db8::7"]

[[delegation]]
name = "acme"
domain = "acme.org"

[[proxy]]
name = "shop"
domain = "shop.{MANAGED_DOMAIN}"
address = "{BACKEND_ADDR}"
port = {BACKEND_HTTP_PORT}
port_tls = {BACKEND_TLS_PORT}

[[reverse_proxy]]
name = "home"
domain = "home.{MANAGED_DOMAIN}"
secret_file = "@SECRET@"

[[fourtosix]]
name = "laptop"
public_key = "{new_key()}"
"""


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)  # an editor that saves by renaming


def answers(gateway: Gateway, name: str, rdtype: str = "A") -> set[str]:
    reply = gateway.dns(name, rdtype)
    return {
        item.to_text()
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.from_text(rdtype)
        for item in rrset
    }


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("standalone")
    secret = workdir / "home-tunnel"
    secret.write_text(f"0:{secrets.token_hex(16)}\n")
    workloads = workdir / "workloads.toml"
    workloads.write_text(BASE.replace("@SECRET@", str(secret)))
    with Gateway(workdir, explorer=False, workloads=workloads) as gw:
        gw.start_natc_site()
        yield gw


def secret_of(gateway: Gateway) -> str:
    return (gateway.workdir / "home-tunnel").read_text().strip()


def test_every_kind_from_the_file_is_served(standalone: Gateway) -> None:
    gw = standalone
    assert "explorer" not in gw.procs  # standalone: nothing to register with
    wait_for(lambda: answers(gw, f"www.{MANAGED_DOMAIN}") == {GW_CLIENT_ADDR}, what="www A")
    assert answers(gw, f"www.{MANAGED_DOMAIN}", "AAAA") == {"2001:db8::7"}
    # The delegated zone is served by the gateway (no proof needed for the operator).
    assert answers(gw, "acme.org", "SOA")
    # The proxy in it, by Host and SNI.
    wait_for(lambda: gw.http(SHOP).status == 200, what="proxy shop.acme.org")
    assert_served_by(gw, SHOP, site="backend", cert="backend")
    # The tunnel: tftunnel from the NATed host, with the secret from the operator's file.
    gw.start_tunnel(secret_of(gw), name="tunnel-home")
    home = f"home.{MANAGED_DOMAIN}"
    wait_for(lambda: gw.http(home).status == 200, timeout=20, what=f"tunnel {home}")
    assert_served_by(gw, home, site="natc-site", cert="natc")


def test_status_shows_states_and_what_clients_need(standalone: Gateway) -> None:
    gw = standalone
    secret_file = gw.workdir / "home-tunnel"
    text = gw.status()
    assert f"workloads file {gw.workloads}:" in text
    for name in ("www", "acme", "shop", "home", "laptop"):
        assert f" {name} " in text
    assert "4 ok, 1 error, 0 pending declared workloads" in text
    assert "ERROR laptop: " in text
    assert "4to6 is not enabled on this gateway" in text
    assert (
        f'TRC_SECRET="$(cat {secret_file})" tftunnel --remote {GW_CLIENT_ADDR}:{TUNNEL_PORT}'
        in text
    )
    assert secret_of(gw) not in text  # never the secret
    doc = json.loads(gw.status("--json"))
    states = {w["name"]: w["state"] for w in doc["declared"]["workloads"]}
    assert states == {"www": "ok", "acme": "ok", "shop": "ok", "home": "ok", "laptop": "error"}
    assert secret_of(gw) not in json.dumps(doc)


def test_file_edits_apply_live_without_restarts(standalone: Gateway) -> None:
    gw = standalone
    pids = {n: gw.procs[n].popen.pid for n in ("redis", "coredns", "router", "agent")}
    path = gw.workloads
    assert path is not None
    before = path.read_text()
    edited = before.replace('name = "www"', 'name = "web"').replace(
        f"www.{MANAGED_DOMAIN}", f"web.{MANAGED_DOMAIN}"
    )
    write(path, edited)
    wait_for(lambda: answers(gw, f"web.{MANAGED_DOMAIN}") == {GW_CLIENT_ADDR}, what="web A")
    wait_for(lambda: not answers(gw, f"www.{MANAGED_DOMAIN}"), what="www removed")
    assert gw.http(SHOP).status == 200  # untouched
    write(path, before)
    wait_for(lambda: answers(gw, f"www.{MANAGED_DOMAIN}") == {GW_CLIENT_ADDR}, what="www back")
    assert {n: gw.procs[n].popen.pid for n in pids} == pids


def test_sighup_rereads_the_secret_files(standalone: Gateway) -> None:
    gw = standalone
    secret_file = gw.workdir / "home-tunnel"
    old = secret_of(gw)
    new = f"0:{secrets.token_hex(16)}"
    secret_file.write_text(new + "\n")  # not watched: the operator signals the agent
    gw.signal_agent(signal.SIGHUP)

    def route_secret() -> str:
        raw = gw.redis_cli("GET", f"/tcprouter/service/home.{MANAGED_DOMAIN}")
        return str(json.loads(base64.b64decode(json.loads(raw)["Value"]))["clientsecret"])

    wait_for(lambda: route_secret() == new, what="the new tunnel secret in the route")
    assert old != new
    gw.stop("tunnel-home")
    gw.start_tunnel(new, name="tunnel-home")
    home = f"home.{MANAGED_DOMAIN}"
    wait_for(lambda: gw.http(home).status == 200, timeout=20, what="tunnel with the new secret")


def test_a_broken_file_changes_nothing_and_says_why(standalone: Gateway) -> None:
    gw = standalone
    path = gw.workloads
    assert path is not None
    good = path.read_text()
    write(path, good.replace("[[proxy]]", "[[proxy]"))  # a syntax error
    wait_for(lambda: "NOT APPLIED" in gw.status(), what="the error in status")
    assert "not valid TOML" in gw.status()
    assert gw.http(SHOP).status == 200
    assert answers(gw, f"www.{MANAGED_DOMAIN}") == {GW_CLIENT_ADDR}
    # A bad entry: refused with file, entry and field named; the others stay served.
    write(path, good.replace(f'address = "{BACKEND_ADDR}"', 'address = "127.0.0.1"'))
    wait_for(lambda: "NOT APPLIED" not in gw.status(), what="the file applied again")
    text = gw.status()
    assert f"{path}: proxy \"shop\": field 'address': proxy target 127.0.0.1 is a loopback" in text
    wait_for(lambda: gw.refused(SHOP), what="the refused proxy's route removed")
    assert answers(gw, f"www.{MANAGED_DOMAIN}") == {GW_CLIENT_ADDR}
    write(path, good)
    wait_for(lambda: gw.http(SHOP).status == 200, what="proxy back")
