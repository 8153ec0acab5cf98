"""Three hosts in one guest: the gateway (this process, namespace gw), an IPv4-only client and an
IPv6 "internet" host only the gateway can reach.

Addresses: gw 10.77.0.1 ↔ client 10.77.0.2 (client's veth has IPv6 disabled); gw 2001:db8:1::1 ↔
inet 2001:db8:1::2 (inet has no route to the 4to6 prefix, so replies only come back through NAT66).
Tests may use `ip`, `wg`, `nft` and busybox `ping`; only the agent itself must not.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path

GW_V4 = "10.77.0.1"
CLIENT_V4 = "10.77.0.2"
GW_V6 = "2001:db8:1::1"
INET_V6 = "2001:db8:1::2"
NAT_TABLE = "tfgateway_nat"


def run(*args: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def nat66_ruleset(wg_iface: str) -> str:
    """What the appliance sets up: masquerade what comes out of the tunnel on every other way
    out. It needs neither the seed-derived prefix nor the uplink's name."""
    return f"""
table ip6 {NAT_TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname "{wg_iface}" oifname != "{wg_iface}" masquerade
  }}
}}
"""


@dataclass
class Topology:
    client: str = "client"
    inet: str = "inet"

    def up(self) -> None:
        self.down()
        run("ip", "netns", "add", self.client)
        run("ip", "netns", "add", self.inet)
        for ns in (self.client, self.inet):
            run("ip", "link", "set", "lo", "up", ns=ns)
        run(
            "ip",
            "link",
            "add",
            "gw-c",
            "type",
            "veth",
            "peer",
            "name",
            "c-gw",
            "netns",
            self.client,
        )
        run("sysctl", "-qw", "net.ipv6.conf.c-gw.disable_ipv6=1", ns=self.client)
        run("ip", "addr", "add", f"{GW_V4}/24", "dev", "gw-c")
        run("ip", "addr", "add", f"{CLIENT_V4}/24", "dev", "c-gw", ns=self.client)
        run("ip", "link", "add", "gw-i", "type", "veth", "peer", "name", "i-gw", "netns", self.inet)
        run("ip", "-6", "addr", "add", f"{GW_V6}/64", "dev", "gw-i", "nodad")
        run("ip", "-6", "addr", "add", f"{INET_V6}/64", "dev", "i-gw", "nodad", ns=self.inet)
        run("ip", "link", "set", "gw-c", "up")
        run("ip", "link", "set", "gw-i", "up")
        run("ip", "link", "set", "c-gw", "up", ns=self.client)
        run("ip", "link", "set", "i-gw", "up", ns=self.inet)

    def down(self) -> None:
        for ns in (self.client, self.inet):
            run("ip", "netns", "del", ns, check=False)
        run("nft", "delete", "table", "ip6", NAT_TABLE, check=False)

    def nat66(self, wg_iface: str) -> None:
        subprocess.run(["nft", "-f", "-"], input=nat66_ruleset(wg_iface), text=True, check=True)

    def client_tunnel(self, result_data: bytes, private_key_b64: str, tmp: Path) -> None:
        """Configure the client's wg0 from nothing but the result data the gateway returned."""
        data = json.loads(result_data)
        (address,) = data["ips"]
        (peer,) = data["peers"]
        key_file = tmp / "client.key"
        key_file.write_text(private_key_b64 + "\n")
        key_file.chmod(0o600)
        run("ip", "link", "del", "wg0", ns=self.client, check=False)
        run("ip", "link", "add", "wg0", "type", "wireguard", ns=self.client)
        run(
            "wg", "set", "wg0", "private-key", str(key_file),
            "peer", peer["public_key"], "endpoint", peer["endpoint"],
            "allowed-ips", ",".join(peer["allowed_ips"]), "persistent-keepalive", "25",
            ns=self.client,
        )  # fmt: skip
        run("ip", "-6", "addr", "add", f"{address}/128", "dev", "wg0", "nodad", ns=self.client)
        run("ip", "link", "set", "wg0", "up", ns=self.client)
        for allowed in peer["allowed_ips"]:
            run("ip", "-6", "route", "replace", allowed, "dev", "wg0", ns=self.client)

    def inet_routes_to(self, address: IPv6Address) -> bool:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.inet, "ip", "-6", "route", "get", str(address)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return proc.returncode == 0

    def client_reaches_inet(self) -> bool:
        """One echo request from the client to the IPv6 host and its reply.

        inet has no route to the 4to6 prefix, so a reply proves the gateway's NAT66 too.
        """
        proc = subprocess.run(
            ["ip", "netns", "exec", self.client, "busybox", "ping", "-6", "-c1", "-W1", INET_V6],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return proc.returncode == 0


def wg_dump(iface: str) -> dict[str, tuple[str, int]]:
    """Peers of `iface` as `wg show dump` (wireguard-tools, independent of our code) sees them."""
    peers = {}
    for line in run("wg", "show", iface, "dump").splitlines()[1:]:
        key, _psk, _endpoint, allowed, _hs, _rx, _tx, keepalive = line.split("\t")
        peers[key] = (allowed, 0 if keepalive == "off" else int(keepalive))
    return peers


@contextmanager
def nat66_topology(wg_iface: str) -> Iterator[Topology]:
    """The three hosts with the appliance's NAT66 for `wg_iface`; afterwards the namespaces and
    the interface (whoever created it) are gone."""
    topo = Topology()
    topo.up()
    topo.nat66(wg_iface)
    try:
        yield topo
    finally:
        topo.down()
        run("ip", "link", "del", wg_iface, check=False)
