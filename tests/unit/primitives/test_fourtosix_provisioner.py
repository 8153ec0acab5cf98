"""FourToSixProvisioner decisions (F10, ownership, converge, clean stop) on an in-memory link
(tests.support.wireguard.MemoryLink). The same behaviour is checked against the real kernel in
tests/kernel.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.support.wireguard import MemoryLink, new_key, workload
from tfgateway.primitives import fourtosix
from tfgateway.primitives.fourtosix import FourToSixProvisioner
from tfgateway.primitives.provisioner import ProvisionError
from tfgateway.primitives.wireguard import Peer, WireGuardError

SEED = b"a" * 32
ENDPOINT = "gw.example.com:51820"


def cidr(user: str) -> str:
    return f"{fourtosix.user_address(SEED, user)}/128"


@pytest.fixture
async def gw(tmp_path: Path) -> FourToSixProvisioner:
    p = FourToSixProvisioner(SEED, ENDPOINT, "wg-test", MemoryLink(), tmp_path / "forwarding")
    await p.setup()
    await p.converge([])
    return p


def table(p: FourToSixProvisioner) -> dict[str, tuple[str, ...]]:
    assert isinstance(p.link, MemoryLink)
    return {k: v.allowed_ips for k, v in p.link.table.items()}


async def test_setup_configures_key_port_address_up_and_forwarding(tmp_path: Path) -> None:
    link = MemoryLink()
    p = FourToSixProvisioner(SEED, "10.0.0.1:4242", "wg-test", link, tmp_path / "fwd")
    await p.setup()
    assert link.private_key == fourtosix.wireguard_private_key(SEED)
    assert link.port == 4242
    assert link.addrs == [ipaddress.IPv6Interface("fd5e:ca9b:d3eb:7c0::1/64")]
    assert link.link_up
    assert (tmp_path / "fwd").read_text() == "1\n"


async def test_forwarding_already_on_is_not_rewritten_and_failure_is_clear(
    tmp_path: Path,
) -> None:
    on = tmp_path / "on"
    on.write_text("1\n")
    before = on.stat().st_mtime_ns
    p = FourToSixProvisioner(SEED, ENDPOINT, "wg-test", MemoryLink(), on)
    await p.setup()
    assert on.stat().st_mtime_ns == before
    broken = FourToSixProvisioner(SEED, ENDPOINT, "wg-test", MemoryLink(), tmp_path / "no" / "f")
    with pytest.raises(WireGuardError, match="cannot enable IPv6 forwarding"):
        await broken.setup()


async def test_provision_adds_peer_and_returns_upstream_data(gw: FourToSixProvisioner) -> None:
    other = new_key()
    assert isinstance(gw.link, MemoryLink)
    await gw.link.set_peer(Peer(other, ("fd00::5/128",), 0))  # a peer we do not own... yet
    key = new_key()
    data = await gw.provision(workload("1-1", "42", key))
    assert data == fourtosix.result_data(SEED, "42", ENDPOINT)
    assert gw.link.table[key] == Peer(key, (cidr("42"),), 25)
    assert gw.link.table[other].allowed_ips == ("fd00::5/128",)  # untouched


async def test_reprovision_is_idempotent(gw: FourToSixProvisioner) -> None:
    key = new_key()
    first = await gw.provision(workload("1-1", "42", key))
    assert await gw.provision(workload("1-1", "42", key)) == first
    assert table(gw) == {key: (cidr("42"),)}


async def test_second_live_workload_of_a_user_is_refused_f10(gw: FourToSixProvisioner) -> None:
    k1, k2 = new_key(), new_key()
    await gw.provision(workload("1-1", "42", k1))
    with pytest.raises(ProvisionError, match=r"already has a live gateway4to6 workload \(1-1\)"):
        await gw.provision(workload("2-1", "42", k2))
    with pytest.raises(ProvisionError, match="one 4to6 tunnel per user"):
        await gw.provision(workload("3-1", "42", k1))  # same key, other workload: refused too
    assert table(gw) == {k1: (cidr("42"),)}
    # Deleting the refused workloads never touches the live tunnel.
    await gw.decommission(workload("2-1", "42", k2))
    await gw.decommission(workload("3-1", "42", k1))
    assert table(gw) == {k1: (cidr("42"),)}
    # Once the first is gone the user can provision again.
    await gw.decommission(workload("1-1", "42", k1))
    assert table(gw) == {}
    await gw.provision(workload("2-1", "42", k2))
    assert table(gw) == {k2: (cidr("42"),)}


async def test_a_key_of_another_user_is_refused(gw: FourToSixProvisioner) -> None:
    key = new_key()
    await gw.provision(workload("1-1", "42", key))
    with pytest.raises(ProvisionError, match="already used by another user"):
        await gw.provision(workload("2-1", "43", key))
    assert table(gw) == {key: (cidr("42"),)}


async def test_decommission_removes_exactly_that_peer(gw: FourToSixProvisioner) -> None:
    ka, kb = new_key(), new_key()
    await gw.provision(workload("1-1", "42", ka))
    await gw.provision(workload("2-1", "43", kb))
    await gw.decommission(workload("1-1", "42", ka))
    assert table(gw) == {kb: (cidr("43"),)}
    await gw.decommission(workload("1-1", "42", ka))  # idempotent
    assert table(gw) == {kb: (cidr("43"),)}


async def test_invalid_public_key_is_an_error_result(gw: FourToSixProvisioner) -> None:
    with pytest.raises(ProvisionError, match="32 bytes in standard base64"):
        await gw.provision(workload("1-1", "42", "bm90IGEga2V5"))
    assert table(gw) == {}
    await gw.decommission(workload("1-1", "42", "bm90IGEga2V5"))  # no crash, nothing removed


async def test_provision_before_converge_is_refused_not_retried(tmp_path: Path) -> None:
    p = FourToSixProvisioner(SEED, ENDPOINT, "wg-test", MemoryLink(), tmp_path / "fwd")
    await p.setup()
    # An error result ("not ready"), never a retry: a waiting job would hold up every other
    # workload of the gateway while the interface is missing.
    with pytest.raises(ProvisionError, match="not ready on this gateway"):
        await p.provision(workload("1-1", "42", new_key()))


async def test_stale_peer_holding_the_address_is_replaced(gw: FourToSixProvisioner) -> None:
    stale, fresh = new_key(), new_key()
    assert isinstance(gw.link, MemoryLink)
    await gw.link.set_peer(Peer(stale, (cidr("42"),), 25))  # left by a crashed run
    await gw.provision(workload("1-1", "42", fresh))
    assert table(gw) == {fresh: (cidr("42"),)}


async def test_converge_adds_missing_and_removes_unowned(gw: FourToSixProvisioner) -> None:
    assert isinstance(gw.link, MemoryLink)
    ka, kb, gone = new_key(), new_key(), new_key()
    await gw.link.set_peer(Peer(ka, ("fd00::1/128",), 0))  # live but wrong allowed IP
    await gw.link.set_peer(Peer(gone, (cidr("44"),), 25))  # its workload was deleted
    await gw.converge([workload("1-1", "42", ka), workload("2-1", "43", kb)])
    assert table(gw) == {ka: (cidr("42"),), kb: (cidr("43"),)}
    assert all(p.persistent_keepalive == 25 for p in gw.link.table.values())
    # and ownership is known again: the user's second workload is refused.
    with pytest.raises(ProvisionError, match="already has a live"):
        await gw.provision(workload("3-1", "42", new_key()))


async def test_converge_keeps_the_newest_workload_of_a_user(gw: FourToSixProvisioner) -> None:
    old, new, bad = new_key(), new_key(), "!!"
    await gw.converge(
        [
            workload("9-1", "42", new, created=1610000100),
            workload("1-1", "42", old, created=1610000000),
            workload("5-1", "45", bad),
        ]
    )
    assert table(gw) == {new: (cidr("42"),)}
    await gw.decommission(workload("1-1", "42", old))  # the older one holds nothing
    assert table(gw) == {new: (cidr("42"),)}


async def test_clean_stop_keeps_interface_and_peers(tmp_path: Path) -> None:
    link = MemoryLink()
    p = FourToSixProvisioner(SEED, ENDPOINT, "wg-test", link, tmp_path / "fwd")
    await p.setup()
    await p.converge([])
    key = new_key()
    await p.provision(workload("1-1", "42", key))
    await p.close()
    assert link.present
    assert key in link.table
    with pytest.raises(ProvisionError, match="not ready on this gateway"):
        await p.provision(workload("2-1", "43", new_key()))
    # A restarted agent adopts the interface and keeps the live peer.
    again = FourToSixProvisioner(SEED, ENDPOINT, "wg-test", link, tmp_path / "fwd")
    await again.setup()
    await again.converge([workload("1-1", "42", key)])
    assert link.table == {key: Peer(key, (cidr("42"),), 25)}


def test_bad_endpoint_or_name_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="invalid endpoint"):
        FourToSixProvisioner(SEED, "no-port", "wg-test")
    with pytest.raises(ValueError, match="invalid interface name"):
        FourToSixProvisioner(SEED, ENDPOINT, "x" * 16)


@pytest.mark.parametrize("user", ["", "4a", "-1", "4 2", "\u00b2"])
async def test_non_decimal_user_is_refused(gw: FourToSixProvisioner, user: str) -> None:
    with pytest.raises(ProvisionError, match="invalid customer id"):
        await gw.provision(workload("1-1", user, new_key()))
