"""Kernel WireGuard through pyroute2: rtnetlink for the link, genetlink for keys and peers.

Why netlink and not `wg`/`ip`: the agent must not depend on command-line tools or parse their
output, and netlink errors come back as errno values we can turn into clear messages.

pyroute2's synchronous classes are used from a worker thread (`asyncio.to_thread`), one fresh
socket per call: the calls are rare (start-up and one per workload), so simplicity wins over a
long-lived asyncio socket. Keys cross this module as standard base64 text, which is what both
the WireGuard genetlink codec of pyroute2 and the explorer use. Note that the kernel clamps the
private key it is given (so reading it back can differ from what was set in 5 bits).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute, WireGuard
from pyroute2.netlink.exceptions import NetlinkError

__all__ = [
    "KEY_SIZE",
    "Device",
    "Peer",
    "WireGuardError",
    "WireGuardLink",
    "decode_key",
]

KEY_SIZE = 32
_T = TypeVar("_T")


class WireGuardError(OSError):
    """A netlink operation on the WireGuard interface failed; the message says which and why.

    An OSError on purpose: it is trouble of the host, not of the user's workload, so the engine
    retries instead of sending the user an error result.
    """


def decode_key(text: str) -> bytes:
    """Raw 32 bytes of a standard-base64 WireGuard key, or ValueError with a clear reason."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"not standard base64 ({e})") from None
    if len(raw) != KEY_SIZE:
        raise ValueError(f"decodes to {len(raw)} bytes, a WireGuard key has {KEY_SIZE}")
    return raw


@dataclass(frozen=True)
class Peer:
    """A peer as configured on the interface (allowed IPs in canonical CIDR text, sorted)."""

    public_key: str
    allowed_ips: tuple[str, ...]
    persistent_keepalive: int = 0


@dataclass(frozen=True)
class Device:
    """Interface-level WireGuard settings as the kernel reports them."""

    private_key: str | None
    public_key: str | None
    listen_port: int
    peers: tuple[Peer, ...]


def _open_wireguard() -> Any:
    try:
        return WireGuard()
    except NetlinkError as e:
        if e.code == errno.ENOENT:
            raise WireGuardError(
                "the kernel has no WireGuard generic-netlink family (load the wireguard module)"
            ) from None
        raise


def _netlink_message(e: NetlinkError) -> str:
    code = e.code
    return f"{errno.errorcode.get(code, str(code))}: {e}"


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _parse_peer(raw: Any) -> Peer:
    key = _text(raw.get_attr("WGPEER_A_PUBLIC_KEY"))
    ips: list[str] = []
    for allowed in raw.get_attr("WGPEER_A_ALLOWEDIPS") or ():
        addr = allowed.get("addr")
        if addr:
            ips.append(str(ipaddress.ip_network(addr, strict=False)))
    keepalive = raw.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0
    return Peer(public_key=key, allowed_ips=tuple(sorted(ips)), persistent_keepalive=int(keepalive))


class WireGuardLink:
    """One kernel WireGuard interface, addressed by name, in the agent's network namespace."""

    def __init__(self, name: str) -> None:
        if not name or len(name) > 15 or "/" in name or name.strip() != name:
            raise ValueError(f"invalid interface name {name!r} (1-15 characters, no '/' or blanks)")
        self.name = name

    async def _run(self, what: str, fn: Callable[[], _T]) -> _T:
        def call() -> _T:
            try:
                return fn()
            except NetlinkError as e:
                raise WireGuardError(
                    f"{what} on {self.name!r} failed: {_netlink_message(e)}"
                ) from None

        return await asyncio.to_thread(call)

    # -- link (rtnetlink) -------------------------------------------------------------------

    def _index(self, ipr: Any) -> int | None:
        found = ipr.link_lookup(ifname=self.name)
        return int(found[0]) if found else None

    def _kind(self, ipr: Any, index: int) -> str | None:
        (link,) = ipr.get_links(index)
        info = link.get_attr("IFLA_LINKINFO")
        return None if info is None else info.get_attr("IFLA_INFO_KIND")

    async def exists(self) -> bool:
        def fn() -> bool:
            with IPRoute() as ipr:
                return self._index(ipr) is not None

        return await self._run("looking up the link", fn)

    async def create(self) -> bool:
        """Create the interface if it is missing; True when it was created now.

        An existing link of another kind with our name is an error, never silently reused.
        """

        def fn() -> bool:
            with IPRoute() as ipr:
                index = self._index(ipr)
                if index is not None:
                    kind = self._kind(ipr, index)
                    if kind != "wireguard":
                        raise WireGuardError(
                            f"interface {self.name!r} exists but is of kind {kind!r}, not wireguard"
                        )
                    return False
                try:
                    ipr.link("add", ifname=self.name, kind="wireguard")
                except NetlinkError as e:
                    if e.code == errno.EOPNOTSUPP:
                        raise WireGuardError(
                            f"cannot create {self.name!r}: the kernel has no WireGuard support "
                            "(load the wireguard module)"
                        ) from None
                    raise
                return True

        return await self._run("creating the link", fn)

    async def delete(self) -> None:
        def fn() -> None:
            with IPRoute() as ipr:
                index = self._index(ipr)
                if index is not None:
                    ipr.link("del", index=index)

        await self._run("deleting the link", fn)

    async def set_address(self, address: ipaddress.IPv6Interface) -> None:
        """Make `address` present (other addresses are left alone; nodad: it is ours alone)."""

        def fn() -> None:
            with IPRoute() as ipr:
                index = self._require(ipr)
                for existing in ipr.get_addr(index=index, family=10):
                    if (
                        existing.get_attr("IFA_ADDRESS") == str(address.ip)
                        and existing["prefixlen"] == address.network.prefixlen
                    ):
                        return
                ipr.addr(
                    "add",
                    index=index,
                    address=str(address.ip),
                    prefixlen=address.network.prefixlen,
                    flags=0x02,  # IFA_F_NODAD
                )

        await self._run("adding the address", fn)

    async def addresses(self) -> list[ipaddress.IPv6Interface]:
        def fn() -> list[ipaddress.IPv6Interface]:
            with IPRoute() as ipr:
                index = self._require(ipr)
                return [
                    ipaddress.IPv6Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                    for a in ipr.get_addr(index=index, family=10)
                ]

        return await self._run("listing addresses", fn)

    async def up(self) -> None:
        def fn() -> None:
            with IPRoute() as ipr:
                ipr.link("set", index=self._require(ipr), state="up")

        await self._run("setting the link up", fn)

    async def is_up(self) -> bool:
        def fn() -> bool:
            with IPRoute() as ipr:
                (link,) = ipr.get_links(self._require(ipr))
                return bool(link["flags"] & 0x1)  # IFF_UP

        return await self._run("reading the link state", fn)

    def _require(self, ipr: Any) -> int:
        index = self._index(ipr)
        if index is None:
            raise WireGuardError(f"interface {self.name!r} does not exist")
        return index

    # -- WireGuard (genetlink) -------------------------------------------------------------

    async def configure(self, private_key: str, listen_port: int) -> None:
        decode_key(private_key)
        if not 0 < listen_port < 65536:
            raise ValueError(f"listen port out of range: {listen_port}")

        def fn() -> None:
            with _open_wireguard() as wg:
                wg.set(self.name, private_key=private_key, listen_port=listen_port)

        await self._run("setting the private key and listen port", fn)

    async def device(self) -> Device:
        def fn() -> Device:
            with _open_wireguard() as wg:
                messages = wg.info(self.name)
            private: str | None = None
            public: str | None = None
            port = 0
            peers: list[Peer] = []
            for msg in messages:
                if msg.get_attr("WGDEVICE_A_PRIVATE_KEY") is not None:
                    private = _text(msg.get_attr("WGDEVICE_A_PRIVATE_KEY"))
                if msg.get_attr("WGDEVICE_A_PUBLIC_KEY") is not None:
                    public = _text(msg.get_attr("WGDEVICE_A_PUBLIC_KEY"))
                port = int(msg.get_attr("WGDEVICE_A_LISTEN_PORT") or port)
                peers.extend(_parse_peer(p) for p in msg.get_attr("WGDEVICE_A_PEERS") or ())
            return Device(private, public, port, tuple(_merge(peers)))

        return await self._run("reading the WireGuard device", fn)

    async def peers(self) -> tuple[Peer, ...]:
        return (await self.device()).peers

    async def set_peer(self, peer: Peer) -> None:
        """Add or update one peer; its allowed IPs are replaced, other peers are not touched."""
        decode_key(peer.public_key)
        spec: dict[str, Any] = {
            "public_key": peer.public_key,
            "allowed_ips": list(peer.allowed_ips),
            "replace_allowed_ips": True,
            "persistent_keepalive": peer.persistent_keepalive,
        }

        def fn() -> None:
            with _open_wireguard() as wg:
                wg.set(self.name, peer=spec)

        await self._run("setting a peer", fn)

    async def remove_peer(self, public_key: str) -> None:
        """Remove one peer by key; removing an absent peer is not an error."""
        decode_key(public_key)

        def fn() -> None:
            with _open_wireguard() as wg:
                wg.set(self.name, peer={"public_key": public_key, "remove": True})

        await self._run("removing a peer", fn)


def _merge(peers: Iterable[Peer]) -> list[Peer]:
    """A dump split over several messages repeats a peer to continue its allowed IPs."""
    merged: dict[str, Peer] = {}
    for p in peers:
        old = merged.get(p.public_key)
        if old is None:
            merged[p.public_key] = p
        else:
            merged[p.public_key] = Peer(
                p.public_key,
                tuple(sorted({*old.allowed_ips, *p.allowed_ips})),
                old.persistent_keepalive or p.persistent_keepalive,
            )
    return list(merged.values())
