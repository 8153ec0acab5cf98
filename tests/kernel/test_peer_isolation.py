"""4to6 users cannot reach each other through the gateway: the nftables tables the NixOS
module renders (tests/nixos/rendered/fourtosix.nft, only the interface name substituted) drop
traffic from one WireGuard peer to another, while each still reaches the IPv6 Internet; the
module's `allowPeerToPeer` (which leaves the drop table out) lets them through."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.test_fourtosix_kernel import ENDPOINT, IFACE, SEED
from tests.kernel.topology import Topology, run
from tests.support.processes import wait_until
from tests.support.wireguard import KeyPair, workload
from tfgateway.primitives import fourtosix
from tfgateway.primitives.fourtosix import FourToSixProvisioner

RENDERED = Path(__file__).resolve().parents[1] / "nixos" / "rendered" / "fourtosix.nft"
RENDERED_IFACE = "wg-tfgateway"
GW2_V4, CLIENT2_V4 = "10.78.0.1", "10.78.0.2"


def module_tables(with_isolation: bool) -> str:
    """The module's tables for this guest's interface; without isolation, as the module
    renders them with allowPeerToPeer = true (the drop table left out)."""
    text = RENDERED.read_text()
    assert f'"{RENDERED_IFACE}"' in text, "fourtosix.nft no longer names the interface"
    tables = text.replace(f'"{RENDERED_IFACE}"', f'"{IFACE}"').split("\n\n")
    kept = [t for t in tables if with_isolation or "table inet tfgateway-4to6" not in t]
    assert any("tfgateway-nat66" in t for t in kept)
    return "\n".join(kept)


def load(ruleset: str) -> None:
    drop_tables()
    subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, check=True)


def drop_tables() -> None:
    run("nft", "delete", "table", "inet", "tfgateway-4to6", check=False)
    run("nft", "delete", "table", "ip6", "tfgateway-nat66", check=False)


def pings(ns: str, address: str) -> bool:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "busybox", "ping", "-6", "-c1", "-W1", address],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return proc.returncode == 0


@pytest.fixture
def two_clients() -> Iterator[tuple[Topology, Topology]]:
    """alice: the standard topology's client; bob: a second IPv4-only client."""
    alice = Topology()
    alice.up()
    bob = Topology(client="client2", inet=alice.inet)
    run("ip", "netns", "add", bob.client)
    run("ip", "link", "set", "lo", "up", ns=bob.client)
    run("ip", "link", "add", "gw-c2", "type", "veth", "peer", "name", "c2-gw", "netns", bob.client)
    run("sysctl", "-qw", "net.ipv6.conf.c2-gw.disable_ipv6=1", ns=bob.client)
    run("ip", "addr", "add", f"{GW2_V4}/24", "dev", "gw-c2")
    run("ip", "addr", "add", f"{CLIENT2_V4}/24", "dev", "c2-gw", ns=bob.client)
    run("ip", "link", "set", "gw-c2", "up")
    run("ip", "link", "set", "c2-gw", "up", ns=bob.client)
    run("ip", "route", "add", "default", "via", GW2_V4, ns=bob.client)
    yield alice, bob
    drop_tables()
    run("ip", "netns", "del", bob.client, check=False)
    alice.down()
    run("ip", "link", "del", IFACE, check=False)


@pytest.mark.timeout(300)
async def test_peers_reach_the_internet_but_not_each_other(
    two_clients: tuple[Topology, Topology], tmp_path: Path
) -> None:
    alice_topo, bob_topo = two_clients
    gw = FourToSixProvisioner(SEED, ENDPOINT, IFACE)
    await gw.setup()
    await gw.converge([])
    alice, bob = KeyPair(), KeyPair()
    alice_data = await gw.provision(workload("300-1", "42", alice.public))
    bob_data = await gw.provision(workload("301-1", "43", bob.public))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alice_topo.client_tunnel(alice_data, alice.private, tmp_path / "a")
    bob_topo.client_tunnel(bob_data, bob.private, tmp_path / "b")
    bob_address = str(fourtosix.user_address(SEED, "43"))

    load(module_tables(with_isolation=True))
    wait_until(alice_topo.client_reaches_inet, timeout=30, interval=0.5, what="alice online")
    wait_until(lambda: pings(bob_topo.client, "2001:db8:1::2"), timeout=30, interval=0.5,
               what="bob online")  # fmt: skip
    assert not any(pings(alice_topo.client, bob_address) for _ in range(3))
    counters = run("nft", "list", "table", "inet", "tfgateway-4to6")
    assert "drop" in counters

    # allowPeerToPeer: the same tables without the drop: now alice reaches bob.
    load(module_tables(with_isolation=False))
    wait_until(lambda: pings(alice_topo.client, bob_address), timeout=30, interval=0.5,
               what="alice reaches bob when allowed")  # fmt: skip
