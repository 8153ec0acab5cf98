"""FourToSixProvisioner on the real kernel: netlink, WireGuard genetlink, real tunnelled traffic.

One scenario per test (boots are slow under TCG, set-up is shared through the module fixture):
a client with only IPv4 builds its tunnel purely from the result data, reaches an IPv6 host
through the gateway's NAT66, loses it on decommission, and the peer set always equals the
live workloads — across a clean stop and a crash of the provisioner.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.topology import GW_V4, Topology, nat66_topology, run, wg_dump
from tests.support.processes import wait_until
from tests.support.wireguard import KeyPair, workload
from tfgateway.primitives import fourtosix
from tfgateway.primitives.fourtosix import FourToSixProvisioner
from tfgateway.primitives.provisioner import ProvisionError
from tfgateway.primitives.wireguard import Peer, WireGuardLink

SEED = bytes(range(1, 33))
IFACE = "wg-tfgw-test"
ENDPOINT = f"{GW_V4}:51820"


def cidr(user: str) -> str:
    return f"{fourtosix.user_address(SEED, user)}/128"


@pytest.fixture
def topo() -> Iterator[Topology]:
    with nat66_topology(IFACE) as t:
        yield t


@pytest.fixture
async def gw(topo: Topology) -> FourToSixProvisioner:
    p = FourToSixProvisioner(SEED, ENDPOINT, IFACE)
    await p.setup()
    await p.converge([])
    return p


@pytest.mark.timeout(240)
async def test_tunnel_from_result_data_reaches_ipv6_through_nat66(
    gw: FourToSixProvisioner, topo: Topology, tmp_path: Path
) -> None:
    # The interface as the seed and endpoint say (read with wireguard-tools and iproute2).
    assert run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").strip() == "1"
    assert run("wg", "show", IFACE, "listen-port").strip() == "51820"
    assert run("wg", "show", IFACE, "public-key").strip() == fourtosix.wireguard_public_key(SEED)
    addrs = json.loads(run("ip", "-j", "-6", "addr", "show", "dev", IFACE))[0]
    assert "UP" in addrs["flags"]
    assert {(a["local"], a["prefixlen"]) for a in addrs["addr_info"]} >= {
        (str(fourtosix.gateway_interface(SEED).ip), 64)
    }
    assert not topo.client_reaches_inet()  # IPv4 only: no way to the IPv6 host yet

    alice, bob = KeyPair(), KeyPair()
    data = await gw.provision(workload("100-1", "42", alice.public))
    assert data == fourtosix.result_data(SEED, "42", ENDPOINT)
    await gw.provision(workload("101-1", "43", bob.public))  # a neighbour that must stay
    assert wg_dump(IFACE) == {alice.public: (cidr("42"), 25), bob.public: (cidr("43"), 25)}

    topo.client_tunnel(data, alice.private, tmp_path)
    wait_until(topo.client_reaches_inet, timeout=30, interval=0.5, what="ping through the tunnel")
    # The replies came back although inet has no route to the prefix: NAT66 did it.
    assert not topo.inet_routes_to(fourtosix.user_address(SEED, "42"))

    # F10: a second workload of the same user is refused and changes nothing.
    with pytest.raises(ProvisionError, match="already has a live gateway4to6"):
        await gw.provision(workload("102-1", "42", KeyPair().public))
    assert wg_dump(IFACE) == {alice.public: (cidr("42"), 25), bob.public: (cidr("43"), 25)}
    assert topo.client_reaches_inet()

    # An invalid key is an error, the kernel is not touched.
    with pytest.raises(ProvisionError, match="32 bytes in standard base64"):
        await gw.provision(workload("103-1", "44", "AAAA"))

    await gw.decommission(workload("100-1", "42", alice.public))
    assert wg_dump(IFACE) == {bob.public: (cidr("43"), 25)}
    assert not topo.client_reaches_inet()
    assert not any(topo.client_reaches_inet() for _ in range(2))


@pytest.mark.timeout(240)
async def test_peer_set_follows_live_workloads_across_clean_stop_and_crash(
    gw: FourToSixProvisioner, topo: Topology, tmp_path: Path
) -> None:
    alice, bob, carol = KeyPair(), KeyPair(), KeyPair()
    wa, wb = workload("200-1", "42", alice.public), workload("201-1", "43", bob.public)
    data = await gw.provision(wa)
    await gw.provision(wb)
    topo.client_tunnel(data, alice.private, tmp_path)
    wait_until(topo.client_reaches_inet, timeout=30, interval=0.5, what="ping through the tunnel")

    # Clean stop: interface and peers stay, the tunnel keeps working while the agent is down.
    await gw.close()
    assert wg_dump(IFACE) == {alice.public: (cidr("42"), 25), bob.public: (cidr("43"), 25)}
    assert topo.client_reaches_inet()
    restarted = FourToSixProvisioner(SEED, ENDPOINT, IFACE)
    await restarted.setup()  # adopts the existing interface
    await restarted.converge([wa, wb])
    assert wg_dump(IFACE) == {alice.public: (cidr("42"), 25), bob.public: (cidr("43"), 25)}
    assert topo.client_reaches_inet()

    # Crash (no close): while down, bob's workload was deleted and carol's created; someone also
    # left a stray peer. The next start converges to exactly the live workloads.
    link = WireGuardLink(IFACE)
    stray = KeyPair().public
    await link.set_peer(Peer(stray, ("fd00::99/128",), 0))
    wc = workload("202-1", "44", carol.public)
    after_crash = FourToSixProvisioner(SEED, ENDPOINT, IFACE)
    await after_crash.setup()
    await after_crash.converge([wa, wc])
    assert wg_dump(IFACE) == {alice.public: (cidr("42"), 25), carol.public: (cidr("44"), 25)}
    assert topo.client_reaches_inet()

    # Someone removed the interface entirely: setup recreates it, converge restores the peers.
    run("ip", "link", "del", IFACE)
    again = FourToSixProvisioner(SEED, ENDPOINT, IFACE)
    await again.setup()
    await again.converge([wa, wc])
    assert wg_dump(IFACE) == {alice.public: (cidr("42"), 25), carol.public: (cidr("44"), 25)}
    assert str(ipaddress.IPv6Interface(fourtosix.gateway_interface(SEED))) in run(
        "ip", "-6", "addr", "show", "dev", IFACE
    )
    wait_until(topo.client_reaches_inet, timeout=30, interval=0.5, what="tunnel after re-creation")
