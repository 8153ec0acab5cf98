"""WireGuard pieces for the gateway4to6 tests: key pairs, gateway4to6 workloads and an in-memory
link double.

The link double follows the kernel's rules that matter to the provisioner (one peer per key, one
peer per allowed IP: setting an IP on a peer takes it from any other); tests/kernel checks the
same behaviour against the real kernel.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from datetime import UTC, datetime

import nacl.public

from tfgateway.model.reservation import Reservation
from tfgateway.primitives.wireguard import Peer, WireGuardLink

__all__ = ["KeyPair", "MemoryLink", "new_key", "workload"]


class KeyPair:
    """A WireGuard key pair in standard base64, as a user's client holds it."""

    def __init__(self) -> None:
        key = nacl.public.PrivateKey.generate()
        self.private = base64.b64encode(bytes(key)).decode()
        self.public = base64.b64encode(bytes(key.public_key)).decode()


def new_key() -> str:
    """A fresh public key (its private half is not needed)."""
    return KeyPair().public


def workload(rid: str, user: str, key: str, created: int = 1610000000) -> Reservation:
    """A gateway4to6 reservation of `user` for public key `key`."""
    return Reservation(
        id=rid,
        user_id=user,
        type="gateway4to6",
        data=json.dumps({"public_key": key}).encode(),
        created=datetime.fromtimestamp(created, UTC),
    )


class MemoryLink(WireGuardLink):
    def __init__(self, name: str = "wg-test") -> None:
        super().__init__(name)
        self.present = False
        self.private_key: str | None = None
        self.port = 0
        self.addrs: list[ipaddress.IPv6Interface] = []
        self.link_up = False
        self.table: dict[str, Peer] = {}

    async def create(self) -> bool:
        created = not self.present
        self.present = True
        return created

    async def exists(self) -> bool:
        return self.present

    async def configure(self, private_key: str, listen_port: int) -> None:
        self.private_key, self.port = private_key, listen_port

    async def set_address(self, address: ipaddress.IPv6Interface) -> None:
        if address not in self.addrs:
            self.addrs.append(address)

    async def up(self) -> None:
        self.link_up = True

    async def peers(self) -> tuple[Peer, ...]:
        return tuple(self.table.values())

    async def set_peer(self, peer: Peer) -> None:
        for key, other in list(self.table.items()):
            if key != peer.public_key:
                left = tuple(ip for ip in other.allowed_ips if ip not in peer.allowed_ips)
                self.table[key] = Peer(key, left, other.persistent_keepalive)
        self.table[peer.public_key] = peer

    async def remove_peer(self, public_key: str) -> None:
        self.table.pop(public_key, None)
