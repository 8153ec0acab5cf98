"""Who holds a name on this gateway, across DNS and proxies: the one owner of that concept.

A name is held by the user of its subdomain, else by the owner of the closest delegated zone
around it, and, independently, by the user of a proxy or reverse proxy on it. DNS and proxy
primitives ask here before they write, inside their optimistic transaction (`store.transaction`),
so the check and the write are one atomic check-and-set. Whether a claim also needs proof of
control in DNS (`proof_needed`) is decided here too; the proof itself is `name_proofs.py`.
"""

from __future__ import annotations

import functools
from collections.abc import Collection

from tfgateway.primitives.coredns_redis import (
    MANAGED_DOMAINS_KEY,
    ZONE_OWNERS_KEY,
    as_text,
    zone_owner_of,
)
from tfgateway.primitives.provisioner import NameHeldError, ProvisionError
from tfgateway.primitives.tcprouter import decode_service, proxy_key
from tfgateway.store.transaction import Read, Transaction

__all__ = [
    "closest_zone",
    "name_owner",
    "name_reads",
    "proof_needed",
    "proxy_owner",
    "require_no_other_proxy",
    "require_proxy_allowed",
    "zone_candidates",
    "zone_owner",
]


def zone_candidates(domain: str) -> list[str]:
    """The zones that may contain `domain` (itself first, never the top-level label alone)."""
    return list(_zone_candidates(domain))


@functools.lru_cache(maxsize=1024)  # a job asks for the same name's several times
def _zone_candidates(domain: str) -> tuple[str, ...]:
    labels = domain.split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels) - 1))


async def zone_owner(txn: Transaction, zone: str) -> str | None:
    """The owner of `zone` itself (a user, or the gateway for a managed domain)."""
    return zone_owner_of(await txn.hget(ZONE_OWNERS_KEY, zone))


async def closest_zone(txn: Transaction, domain: str) -> tuple[str, str] | None:
    """(zone, owner) of the closest zone in `zone` that contains `domain` (or is it)."""
    candidates = zone_candidates(domain)
    if not candidates:
        return None
    values = await txn.hmget(ZONE_OWNERS_KEY, candidates)
    for zone, value in zip(candidates, values, strict=True):
        owner = zone_owner_of(value)
        if owner is not None:
            return zone, owner
    return None


async def name_owner(txn: Transaction, domain: str, gateway_identity: str) -> str | None:
    """Who owns `domain` in this gateway's DNS: the subdomain's user, else the owner of the
    delegated zone that contains it; None for unclaimed names (under a managed domain or
    outside every zone). `txn` records the reads."""
    claimed = as_text(await txn.hget(MANAGED_DOMAINS_KEY, domain))
    if claimed:
        return claimed
    found = await closest_zone(txn, domain)
    if found is None:
        return None
    _, owner = found
    return None if owner == gateway_identity else owner


async def proof_needed(
    txn: Transaction,
    user: str,
    domain: str,
    gateway_identity: str,
    *,
    managed: Collection[str] = (),
    zone: bool = False,
) -> bool:
    """Whether `user` must prove control of `domain` to claim it: yes unless it lies in a
    managed domain (`managed`, the configured ones, so a redis that lost its data changes
    nothing; or one in redis) or in a zone `user` delegated (that zone's proof covers it). For
    a zone (`zone`), only the zones around it count, never the zone itself, and a managed
    domain never exempts it (a zone inside one is refused by the delegation's own checks)."""
    candidates = zone_candidates(domain)[1:] if zone else zone_candidates(domain)
    if not zone and any(c in managed for c in candidates):
        return False
    if not candidates:
        return True
    for value in await txn.hmget(ZONE_OWNERS_KEY, candidates):
        owner = zone_owner_of(value)
        if owner is not None:
            return owner not in (user, gateway_identity)
    return True


async def proxy_owner(txn: Transaction, domain: str) -> str | None:
    """User of the proxy on `domain`; None if there is none. An unreadable entry counts as
    owned by nobody we can name, so it is reported as the empty string (never ours)."""
    value = await txn.get(proxy_key(domain))
    if value is None:
        return None
    service = decode_service(value)
    user = service.get("user") if service else None
    return user if isinstance(user, str) else ""


def name_reads(domain: str) -> list[Read]:
    """The reads `name_owner` and `proxy_owner` make for `domain`, to prefetch together."""
    candidates = zone_candidates(domain)
    reads: list[Read] = [("hget", MANAGED_DOMAINS_KEY, domain), ("get", proxy_key(domain))]
    if candidates:
        reads.append(("hmget", ZONE_OWNERS_KEY, *candidates))
    return reads


async def require_no_other_proxy(txn: Transaction, user: str, domain: str) -> None:
    """Refuse a DNS claim on a name another user proxies."""
    proxied_by = await proxy_owner(txn, domain)
    if proxied_by is not None and proxied_by != user:
        raise NameHeldError(f"{domain} is used by another user's proxy")


async def require_proxy_allowed(
    txn: Transaction, user: str, domain: str, gateway_identity: str
) -> None:
    """Refuse a proxy on a name another user proxies or holds in DNS, or on a managed domain."""
    current = await proxy_owner(txn, domain)
    if current is not None and current != user:
        raise NameHeldError(f"cannot add proxy for {domain}: used by another user")
    if await zone_owner(txn, domain) == gateway_identity:
        raise ProvisionError(f"{domain} is a domain managed by this gateway")
    dns_owner = await name_owner(txn, domain, gateway_identity)
    if dns_owner is not None and dns_owner != user:
        raise NameHeldError(f"cannot add proxy for {domain}: the name belongs to another user")
