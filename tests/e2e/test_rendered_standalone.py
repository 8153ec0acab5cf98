"""The standalone gateway as the NixOS module configures it (tests/nixos/rendered/standalone.nix:
no explorer, every workload in services.tfgateway.workloads): the agent started from the kept
`standalone-agent.cmdline` with the generated `workloads.toml`, its tunnel secret in the
credentials folder as systemd hands it over (`standalone-unit.json`), and the data plane from
the reference's renderings (test_rendered.py). Only paths and addresses are substituted, and the
4to6 flags left out (kernel WireGuard is only in the VM test): the file's 4to6 peer must then be
the one entry in error."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from tests.support.gateway import GW_CLIENT_ADDR, Gateway, wait_for
from tests.support.rendered import Rendered

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("rendered-standalone")
    rendered = Rendered()
    credentials = workdir / "credentials"
    credentials.mkdir(mode=0o700)
    # What the operator's secretFile holds, as LoadCredential copies it (`0:`: the operator).
    assert rendered.standalone_credentials() == ["home-tunnel"]
    secret = credentials / "home-tunnel"
    secret.write_text(f"0:{secrets.token_hex(16)}\n")
    workloads = workdir / "workloads.toml"
    workloads.write_text(rendered.workloads(credentials))
    with Gateway(workdir, rendered=rendered, explorer=False, workloads=workloads) as gw:
        yield gw


def answers(gw: Gateway, name: str, rdtype: str = "A") -> set[str]:
    return {r.to_text() for rrset in gw.dns(name, rdtype).answer for r in rrset}


def test_the_generated_entries_are_served(gateway: Gateway) -> None:
    gw = gateway
    wait_for(lambda: answers(gw, "web.gw.example") == {GW_CLIENT_ADDR}, what="web A")
    assert answers(gw, "web.gw.example", "AAAA") == {"2001:db8::80"}
    wait_for(lambda: answers(gw, "www.demo.example") == {"198.51.100.80"}, what="zone name")
    assert gw.dns("demo.example", "SOA").answer, "the delegated zone's apex"
    wait_for(lambda: gw.http("web.gw.example").status == 200, what="proxy web")
    assert gw.http("web.gw.example").body == b"backend http host=web.gw.example\n"


def test_the_tunnel_uses_the_credential(gateway: Gateway) -> None:
    gw = gateway
    gw.start_natc_site()
    gw.start_tunnel((gw.credentials / "home-tunnel").read_text().strip())
    wait_for(lambda: gw.http("home.gw.example").status == 200, what="tunnel home", timeout=30)
    assert gw.http("home.gw.example").body == b"natc-site http host=home.gw.example\n"


def test_status_names_every_entry_and_only_the_peer_fails(gateway: Gateway) -> None:
    gw = gateway
    wait_for(
        lambda: len(json.loads(gw.status("--json"))["declared"]["workloads"]) == 9,
        what="every entry in status",
    )
    states = {
        w["name"]: w["state"] for w in json.loads(gw.status("--json"))["declared"]["workloads"]
    }
    assert states == {
        "web-dns": "ok", "home-dns": "ok", "shop-dns": "ok", "demo-www": "ok", "demo": "ok",
        "web": "ok", "shop": "ok", "home": "ok", "laptop": "error",
    }  # fmt: skip
    assert (gw.credentials / "home-tunnel").read_text().strip() not in gw.status()
