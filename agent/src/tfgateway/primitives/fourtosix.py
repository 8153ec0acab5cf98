"""4to6: IPv4-only users reach IPv6 through a WireGuard tunnel to the gateway (spec §11).

Everything is derived from the identity seed, exactly as the Go daemon does, so a gateway switched
to this agent keeps its prefix, its WireGuard key and every user's address:

- subnet: `fd` + MD5(seed)[0:7], /64; the gateway's interface address is `<prefix>::1/64`;
- a user's address: the prefix + MD5(seed ‖ decimal customer tid)[0:8] — per *user*, not per
  workload (finding F10);
- WireGuard private key: the 32 raw seed bytes (finding F3: reading the interface's private key
  reveals the identity seed up to the 5 bits the kernel clamps; only CAP_NET_ADMIN can read it);
  public key: X25519 of the base point.

Choices this module makes (each has a test):

- **One live gateway4to6 workload per user (F10).** The address comes from the user id and
  WireGuard lets one peer own an allowed IP, so upstream silently moved the address to the second
  workload's peer and left the first one's tunnel dead. Here a second live workload of the same
  user (any key) gets a clear error result; re-provisioning the same workload is idempotent.
  A public key already used by another user's live workload is refused too (one peer per key).
- **Ownership is by workload id.** Decommission removes the peer only if that workload owns the
  user's address, so deleting a refused workload never tears down the live tunnel.
- **Start-up converges** (`setup()` then `converge(live)`): peers of live workloads are (re)added,
  every other peer is removed — whether the previous run stopped cleanly or crashed. If the cache
  holds several live workloads of one user (possible after a switch from the Go daemon), the
  newest one (created, then id) keeps the address, as the last peer added did upstream.
- **A clean stop keeps the interface** (`close()`): key, address and peers stay in the kernel, so
  users' tunnels keep working while the agent restarts; the next start converges. (Upstream deleted
  the interface on exit and re-provisioned every tunnel on start.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nacl.bindings

from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.provisioner import ProvisionError
from tfgateway.primitives.wireguard import Peer, WireGuardError, WireGuardLink, decode_key

__all__ = [
    "PERSISTENT_KEEPALIVE",
    "RESERVATION_TYPE",
    "FourToSixProvisioner",
    "gateway_interface",
    "parse_endpoint",
    "result_data",
    "subnet",
    "user_address",
    "wireguard_private_key",
    "wireguard_public_key",
]

log = logging.getLogger(__name__)

RESERVATION_TYPE = "gateway4to6"
PERSISTENT_KEEPALIVE = 25
SEED_SIZE = 32
FORWARDING_SYSCTL = Path("/proc/sys/net/ipv6/conf/all/forwarding")


def _check_seed(seed: bytes) -> bytes:
    if len(seed) != SEED_SIZE:
        raise ValueError(f"identity seed must be {SEED_SIZE} bytes, got {len(seed)}")
    return seed


def subnet(seed: bytes) -> ipaddress.IPv6Network:
    """The gateway's /64: fd + MD5(seed)[0:7] + zeros."""
    h = hashlib.md5(_check_seed(seed), usedforsecurity=False).digest()
    return ipaddress.IPv6Network((b"\xfd" + h[:7] + bytes(8), 64))


def gateway_interface(seed: bytes) -> ipaddress.IPv6Interface:
    """`<prefix>::1/64`, the WireGuard interface's own address."""
    net = subnet(seed)
    return ipaddress.IPv6Interface((net.network_address + 1, net.prefixlen))


def user_address(seed: bytes, user_id: str) -> ipaddress.IPv6Address:
    """The address of user `user_id` (decimal customer tid): prefix + MD5(seed ‖ id)[0:8]."""
    d = hashlib.md5(_check_seed(seed) + user_id.encode(), usedforsecurity=False).digest()
    return ipaddress.IPv6Address(subnet(seed).network_address.packed[:8] + d[:8])


def wireguard_private_key(seed: bytes) -> str:
    """Base64 of the raw seed, unclamped (the Go daemon passes the bytes as they are)."""
    return base64.b64encode(_check_seed(seed)).decode("ascii")


def wireguard_public_key(seed: bytes) -> str:
    """Base64 X25519 public key of the seed (libsodium clamps the scalar, as WireGuard does)."""
    return base64.b64encode(nacl.bindings.crypto_scalarmult_base(_check_seed(seed))).decode()


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split `host:port` / `[v6]:port` like Go's net.SplitHostPort; the port must be 1-65535."""
    if endpoint.startswith("["):
        host, sep, rest = endpoint[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid endpoint {endpoint!r}: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = endpoint.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"invalid endpoint {endpoint!r}: expected host:port or [ipv6]:port")
    if not host:
        raise ValueError(f"invalid endpoint {endpoint!r}: empty host")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid endpoint {endpoint!r}: port must be a number in 1-65535")
    return host, int(port_text)


def result_data(seed: bytes, user_id: str, endpoint: str) -> bytes:
    """The Go daemon's `Gateway4to6Result`, byte for byte (Go json.Marshal)."""
    return gojson.marshal(
        {
            "ips": [str(user_address(seed, user_id))],
            "peers": [
                {
                    "public_key": wireguard_public_key(seed),
                    "endpoint": endpoint,
                    "allowed_ips": ["::/0"],
                }
            ],
        }
    )


def user_public_key(r: Reservation) -> str:
    """The user's WireGuard key from the reservation data `{"public_key": "<base64>"}`."""
    try:
        data = json.loads(r.data)
    except (ValueError, TypeError) as e:
        raise ProvisionError(f"invalid gateway4to6 data: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ProvisionError("invalid gateway4to6 data: expected a JSON object")
    key = data.get("public_key")
    if not isinstance(key, str) or not key:
        raise ProvisionError("invalid gateway4to6 data: public_key is missing")
    try:
        decode_key(key)
    except ValueError as e:
        raise ProvisionError(
            f"invalid WireGuard public key {key[:60]!r}: {e};"
            " it must be 32 bytes in standard base64"
        ) from None
    return key


def _check_user(r: Reservation) -> str:
    """The address owner: an explorer user's decimal id, or `0:<entry name>` for a peer of the
    operator's workloads file (one address per entry; never equal to an explorer id)."""
    user = r.user_id
    if user.isascii() and (user.isdigit() or (user.startswith("0:") and len(user) > 2)):
        return user
    raise ProvisionError(f"invalid customer id {user[:40]!r}: expected a decimal number")


@dataclass(frozen=True)
class _Owner:
    reservation_id: str
    public_key: str


class FourToSixProvisioner:
    """The gateway4to6 primitive on one kernel WireGuard interface.

    Life cycle: `setup()` (interface, key, port, address, link up, IPv6 forwarding), then
    `converge(live)` with the live gateway4to6 reservations, then any number of
    `provision`/`decommission`, then `close()` on a clean stop. Operations are serialised.
    Refusals of the workload are `ProvisionError`; trouble of the host (netlink, provision
    before converge) is `WireGuardError`, an OSError, which the engine retries.
    """

    def __init__(
        self,
        seed: bytes,
        endpoint: str,
        iface: str,
        link: WireGuardLink | None = None,
        forwarding_sysctl: Path = FORWARDING_SYSCTL,
    ) -> None:
        self._seed = _check_seed(seed)
        _, self.listen_port = parse_endpoint(endpoint)
        self.endpoint = endpoint
        self.link = link if link is not None else WireGuardLink(iface)
        if self.link.name != iface:
            raise ValueError(f"link {self.link.name!r} does not match interface {iface!r}")
        self._forwarding = forwarding_sysctl
        self._owners: dict[str, _Owner] = {}  # user id -> the live workload holding its address
        self._lock = asyncio.Lock()
        self._converged = False

    @property
    def public_key(self) -> str:
        return wireguard_public_key(self._seed)

    def address_of(self, user_id: str) -> ipaddress.IPv6Address:
        return user_address(self._seed, user_id)

    async def setup(self) -> None:
        """Create (or adopt) the interface and bring it to the state the seed and endpoint say."""
        async with self._lock:
            created = await self.link.create()
            await self.link.configure(wireguard_private_key(self._seed), self.listen_port)
            await self.link.set_address(gateway_interface(self._seed))
            await self.link.up()
            await asyncio.to_thread(self._enable_forwarding)
            log.info(
                "4to6: %s interface %s, %s, port %d, public key %s",
                "created" if created else "adopted",
                self.link.name,
                gateway_interface(self._seed),
                self.listen_port,
                self.public_key,
            )

    async def converge(self, live: Iterable[Reservation]) -> None:
        """Make the peer set exactly the live workloads' peers (one per user, newest wins)."""
        chosen: dict[str, tuple[Reservation, str]] = {}
        for r in sorted(live, key=_age_key):
            try:
                user, key = _check_user(r), user_public_key(r)
            except ProvisionError as e:
                log.warning("4to6: live workload %s ignored: %s", r.id, e)
                continue
            previous = chosen.get(user)
            if previous is not None:
                log.warning(
                    "4to6: user %s has several live workloads; %s keeps the address, not %s",
                    user,
                    r.id,
                    previous[0].id,
                )
            chosen[user] = (r, key)
        by_key: dict[str, str] = {}
        for user, (r, key) in sorted(chosen.items(), key=lambda kv: _age_key(kv[1][0])):
            other = by_key.get(key)
            if other is not None:
                log.warning("4to6: workload %s reuses the key of user %s; ignored", r.id, other)
                del chosen[user]
                continue
            by_key[key] = user
        async with self._lock:
            desired = {key: self._peer(user, key) for user, (_, key) in chosen.items()}
            current = {p.public_key: p for p in await self.link.peers()}
            for key in current.keys() - desired.keys():
                await self.link.remove_peer(key)
            for key, peer in desired.items():
                if current.get(key) != peer:
                    await self.link.set_peer(peer)
            self._owners = {user: _Owner(r.id, key) for user, (r, key) in chosen.items()}
            self._converged = True
            log.info(
                "4to6: converged to %d peers (%d removed)",
                len(desired),
                len(current.keys() - desired.keys()),
            )

    async def provision(self, r: Reservation) -> bytes:
        """Add the user's peer without touching others; the result data tells the user the rest."""
        user, key = _check_user(r), user_public_key(r)
        async with self._lock:
            if not self._converged:
                # An error result, not a retry: a job that waited here would hold up every
                # other workload until the interface appears (the agent keeps retrying setup).
                raise ProvisionError(
                    f"4to6 is not ready on this gateway: WireGuard interface {self.link.name}"
                    " is not set up"
                )
            owner = self._owners.get(user)
            if owner is not None and owner.reservation_id != r.id:
                raise ProvisionError(
                    f"user {user} already has a live gateway4to6 workload ({owner.reservation_id})"
                    f" holding address {self.address_of(user)}; the address is derived from the"
                    " user id, so one 4to6 tunnel per user: delete that workload first"
                )
            for other_user, other in self._owners.items():
                if other_user != user and other.public_key == key:
                    raise ProvisionError(
                        "this WireGuard public key is already used by another user's gateway4to6"
                        " workload; generate a new key pair"
                    )
            peer = self._peer(user, key)
            for existing in await self.link.peers():
                if existing.public_key != key and set(existing.allowed_ips) & set(peer.allowed_ips):
                    # A stale peer (its workload is gone) still holds the address.
                    await self.link.remove_peer(existing.public_key)
            await self.link.set_peer(peer)
            self._owners[user] = _Owner(r.id, key)
        return result_data(self._seed, user, self.endpoint)

    async def decommission(self, r: Reservation) -> None:
        """Remove the peer of this workload, and nothing if the workload holds no address."""
        try:
            user, key = _check_user(r), user_public_key(r)
        except ProvisionError as e:
            log.warning("4to6: decommission of %s: %s; nothing to remove", r.id, e)
            return
        async with self._lock:
            owner = self._owners.get(user)
            if owner is not None and owner.reservation_id != r.id:
                log.info("4to6: %s does not hold user %s's address; peer kept", r.id, user)
                return
            if owner is None:
                # Unknown to this run: remove the key only if it is this user's peer.
                mine = [str(ipaddress.IPv6Network(self.address_of(user)))]
                for existing in await self.link.peers():
                    if existing.public_key == key and list(existing.allowed_ips) in ([], mine):
                        await self.link.remove_peer(key)
                return
            await self.link.remove_peer(owner.public_key)
            del self._owners[user]

    async def close(self) -> None:
        """Clean stop: the interface, its address and its peers stay (see the module docstring)."""
        async with self._lock:
            self._converged = False
            log.info(
                "4to6: agent stopping; %s kept with %d peers", self.link.name, len(self._owners)
            )

    def _enable_forwarding(self) -> None:
        """IPv6 forwarding on, as upstream does; a hardened service with a read-only /proc/sys
        is fine when the system already turned it on."""
        try:
            if self._forwarding.read_text().strip() == "1":
                return
        except OSError:
            pass
        try:
            self._forwarding.write_text("1\n")
        except OSError as e:
            raise WireGuardError(
                f"cannot enable IPv6 forwarding ({self._forwarding}: {e.strerror or e});"
                " set net.ipv6.conf.all.forwarding=1 or let the agent write it"
            ) from None

    def _peer(self, user: str, key: str) -> Peer:
        return Peer(
            public_key=key,
            allowed_ips=(str(ipaddress.IPv6Network(self.address_of(user))),),
            persistent_keepalive=PERSISTENT_KEEPALIVE,
        )


def _age_key(r: Reservation) -> tuple[datetime, str]:
    created = r.created if r.created.tzinfo else r.created.replace(tzinfo=UTC)
    return (created, r.id)
