"""DNS primitives: managed domains, subdomains and delegated zones (`coredns_redis.py` layout).

Better than upstream: every zone gets an apex `@` with SOA and NS (resolvers need them; the SOA
serial is set by the DNS plugin and increases whenever the zone changes); removing a delegation
deletes its zone hash; ownership (`ownership.py`) is checked and written in one atomic
check-and-set (`store.transaction`), so one user can never take over or remove another user's
name, zone, or a name inside another user's zone; nested delegations across users are refused.
A delegation needs proof of control of the zone (`name_proofs.py`), is refused for public
suffixes and for zones holding another user's proxies; a delegated zone serves `_tfgateway` TXT
= its owner, so once the zone points at this gateway its proof is answered by the gateway
itself. Each transaction names the fields it changed on `tfgateway:dns` (`dns_change`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import RedisError

from tfgateway.model.reservation import Reservation
from tfgateway.primitives.coredns_redis import (
    APEX_FIELD,
    DNS_CHANNEL,
    MANAGED_DOMAINS_KEY,
    OWNER_FIELD,
    RECORD_TTL,
    SOA_EXPIRE,
    SOA_MINTTL,
    SOA_REFRESH,
    SOA_RETRY,
    ZONE_OWNERS_KEY,
    as_text,
    dns_change,
    load_record_set,
    owner_from_txt,
    owner_txt_value,
    record_set_value,
    relative,
    zone_key,
    zone_owner_of,
    zone_owner_value,
)
from tfgateway.primitives.name_proofs import ZONE, NameProofs
from tfgateway.primitives.ownership import (
    closest_zone,
    name_reads,
    proof_needed,
    proxy_owner,
    require_no_other_proxy,
    zone_candidates,
    zone_owner,
)
from tfgateway.primitives.proof import PROOF_LABEL, Verdict
from tfgateway.primitives.provisioner import (
    NameHeldError,
    ProvisionError,
    is_reapplying,
    reservation_data,
    reserved_domain,
)
from tfgateway.primitives.tcprouter import (
    PROXY_GENERATION_KEY,
    domain_of_key,
    proxy_keys_pattern,
)
from tfgateway.primitives.validation import (
    IPAddress,
    ValidationError,
    is_public_suffix,
    normalize_domain,
    validate_record_ips,
)
from tfgateway.store.batch import AutoPipeline, as_batch
from tfgateway.store.transaction import Read, Transaction, TransactionConflictError, run_transaction

__all__ = ["DNSStore", "DelegateProvisioner", "SubdomainProvisioner"]

log = logging.getLogger(__name__)

T = TypeVar("T")

PROOF_TXT_TTL = 300


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _mailbox(hostmaster: str) -> str:
    """SOA RNAME: `admin@example.com` → `admin.example.com.` (dots of the local part escaped)."""
    local, at, domain = hostmaster.strip().rpartition("@")
    if not at:
        return _fqdn(normalize_domain(hostmaster, min_labels=1))
    if not local or not local.isascii() or any(c in local for c in ' ;"\\()'):
        raise ValidationError(f"invalid hostmaster address {hostmaster!r}")
    return f"{local.replace('.', chr(92) + '.')}.{normalize_domain(domain, min_labels=1)}."


def _ip_key(ip: IPAddress) -> str:
    return "a" if ip.version == 4 else "aaaa"


def _is_empty(records: dict[str, Any]) -> bool:
    return all(not v for v in records.values())


class DNSStore:
    """Writes the DNS data of one gateway (identity = its node id) into redis."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | AutoPipeline,
        identity_node_id: str,
        nameservers: Sequence[str] = (),
        hostmaster: str | None = None,
        *,
        proofs: NameProofs,
    ) -> None:
        self._batch = as_batch(redis_client)
        self.proofs = proofs
        proofs.register(ZONE, self._withdraw_zone)
        self._redis = self._batch.client
        self.identity = identity_node_id
        self.nameservers = [_fqdn(normalize_domain(ns)) for ns in nameservers]
        # the gateway's own nameserver names: whoever held their records could hijack every
        # zone delegated to this gateway, so no user may have them or a zone around them
        self.reserved_names = frozenset(ns.rstrip(".") for ns in self.nameservers)
        self._hostmaster = _mailbox(hostmaster) if hostmaster else None

    # ----- helpers -----

    async def _transact(
        self,
        body: Callable[[Transaction], Awaitable[T]],
        *,
        wrap_errors: bool = True,
        prefetch: Sequence[Read] = (),
    ) -> T:
        """Run `body` as an optimistic transaction (redistxn): its reads, then its writes
        applied atomically if nothing it read changed meanwhile (else it runs again). Redis
        errors become ProvisionError (chained, so the engine sees they are transient) unless
        `wrap_errors` is false. `prefetch`: reads the body will make, fetched together."""
        try:
            return await run_transaction(self._batch, body, prefetch=prefetch)
        except TransactionConflictError:
            raise ProvisionError("DNS data is changing too fast; try again later") from None
        except RedisError as exc:
            if not wrap_errors:
                raise
            raise ProvisionError(f"DNS store error: {exc}") from exc

    def apex_records(self, zone: str, existing: dict[str, Any]) -> dict[str, Any]:
        """The apex record set: existing data with SOA and NS (from --nameservers) set."""
        records = dict(existing)
        primary = self.nameservers[0] if self.nameservers else f"ns1.{zone}."
        records["soa"] = {
            "ns": primary,
            "MBox": self._hostmaster or f"hostmaster.{zone}.",
            "refresh": SOA_REFRESH,
            "retry": SOA_RETRY,
            "expire": SOA_EXPIRE,
            "minttl": SOA_MINTTL,
            "ttl": RECORD_TTL,
        }
        if self.nameservers:
            records["ns"] = [{"host": ns, "ttl": RECORD_TTL} for ns in self.nameservers]
        else:
            records.pop("ns", None)
        return records

    async def _queue_zone_metadata(
        self, txn: Transaction, zone: str, owner: str, identity: str
    ) -> None:
        """Read the apex, then queue owner, `__owner__`, apex (and proof) writes."""
        apex = load_record_set(await txn.hget(zone_key(zone), APEX_FIELD))
        txn.multi()
        txn.hset(ZONE_OWNERS_KEY, zone, zone_owner_value(owner))
        txn.hset(zone_key(zone), OWNER_FIELD, owner_txt_value(identity, owner))
        self._queue_apex(txn, zone, owner, apex, OWNER_FIELD)

    def _queue_apex(
        self, txn: Transaction, zone: str, owner: str | None, apex: dict[str, Any], *changed: str
    ) -> None:
        """The apex SOA/NS and, in a user's zone, `_tfgateway` TXT = the owner: once the zone
        is delegated to this gateway, the proof of control is answered from here. `changed`:
        fields of the zone the caller wrote in the same transaction, named with these."""
        txn.hset(zone_key(zone), APEX_FIELD, record_set_value(self.apex_records(zone, apex)))
        if owner is not None and owner != self.identity:
            proof = {"txt": [{"text": owner, "ttl": PROOF_TXT_TTL}]}
            txn.hset(zone_key(zone), PROOF_LABEL, record_set_value(proof))
            changed = (*changed, PROOF_LABEL)
        txn.publish(DNS_CHANNEL, dns_change(zone, *changed, APEX_FIELD))

    # ----- managed domains -----

    async def setup_managed_domains(self, domains: Iterable[str]) -> list[str]:
        """Claim the operator's `--domains` for this gateway and refresh every zone's apex.

        Also gives zones delegated under the Go daemon their SOA/NS apex. Raises ValueError
        (clear message) for an invalid domain or one delegated to a user; redis errors are
        raised as they are (the caller retries those).
        """
        managed = []
        for raw in domains:
            try:
                domain = normalize_domain(raw)
            except ValidationError as exc:
                raise ValueError(f"invalid managed domain: {exc}") from exc

            async def claim(txn: Transaction, domain: str = domain) -> None:
                owner = await zone_owner(txn, domain)
                if owner is not None and owner != self.identity:
                    raise ValueError(
                        f"managed domain {domain} is delegated to user {owner}; remove that "
                        "delegation first"
                    )
                await self._queue_zone_metadata(txn, domain, self.identity, self.identity)

            await self._transact(claim, wrap_errors=False)
            log.info("gateway manages domain %s", domain)
            managed.append(domain)
        await self.refresh_apexes()
        return managed

    async def refresh_apexes(self) -> None:
        """Rewrite the apex of every zone in `zone` (e.g. after --nameservers changed)."""
        zones = await self._batch.hgetall(ZONE_OWNERS_KEY)
        for raw_zone in zones:
            zone = as_text(raw_zone) or ""

            async def refresh(txn: Transaction, zone: str = zone) -> None:
                owner = await zone_owner(txn, zone)
                if owner is None:
                    txn.multi()
                    return
                apex = load_record_set(await txn.hget(zone_key(zone), APEX_FIELD))
                txn.multi()
                self._queue_apex(txn, zone, owner, apex)

            await self._transact(refresh, wrap_errors=False)

    async def cleanup(self) -> int:
        """Remove empty record sets (`""` or `{}`) from zone hashes, as the Go daemon did."""
        removed = 0
        async for key in self._redis.scan_iter(match="*.", count=500):
            if await self._redis.type(key) not in (b"hash", "hash"):
                continue
            async for field, value in self._redis.hscan_iter(key, count=500):
                if value in (b"", b"{}", "", "{}"):
                    removed += await self._redis.hdel(key, field)
        return removed

    # ----- subdomains -----

    def _check_reserved(self, domain: str, *, zone: bool) -> None:
        for name in self.reserved_names:
            if name == domain or (zone and name.endswith("." + domain)):
                raise ProvisionError(f"{domain} holds {name}, a nameserver of this gateway")

    async def add_subdomain(self, user: str, domain: str, ips: Sequence[IPAddress]) -> None:
        """Point `domain` at `ips` for `user` (merged with the user's existing records)."""
        self._check_reserved(domain, zone=False)

        async def body(txn: Transaction) -> str:
            found = await closest_zone(txn, domain)
            if found is None and is_reapplying():
                suspended = await self.proofs.suspended_zone(txn, user, zone_candidates(domain))
                if suspended is not None:
                    txn.multi()
                    return suspended  # served again once the zone's proof is back
            if found is None:
                raise ProvisionError(
                    f"{domain} is not managed by this gateway; delegate the domain first"
                )
            zone, zone_owner = found
            if zone_owner == self.identity:
                if domain == zone or "." in relative(domain, zone):
                    raise ProvisionError(
                        f"subdomain {domain} must be exactly one label under the managed "
                        f"domain {zone}"
                    )
            elif zone_owner != user:
                raise NameHeldError(
                    f"cannot add subdomain {domain}: zone {zone} belongs to another user"
                )
            claimed = as_text(await txn.hget(MANAGED_DOMAINS_KEY, domain))
            if claimed and claimed != user:
                raise NameHeldError(f"subdomain {domain} is already reserved by another user")
            await require_no_other_proxy(txn, user, domain)
            field = relative(domain, zone)
            await txn.watch(zone_key(zone))
            records = load_record_set(await txn.hget(zone_key(zone), field))
            for ip in ips:
                kind = _ip_key(ip)
                entries = [e for e in records.get(kind) or [] if isinstance(e, dict)]
                if not any(e.get("ip") == str(ip) for e in entries):
                    entries.append({"ip": str(ip), "ttl": RECORD_TTL})
                records[kind] = entries
            if field == APEX_FIELD:
                records = self.apex_records(zone, records)
            txn.multi()
            txn.hset(MANAGED_DOMAINS_KEY, domain, user)
            txn.hset(zone_key(zone), field, record_set_value(records))
            txn.publish(DNS_CHANNEL, dns_change(zone, field))
            return zone

        # The body's reads (the owners, the claim, the proxy, the record set of every zone that
        # may hold the name) fetched together, in one pipeline.
        reads = name_reads(domain)
        reads += [("hget", zone_key(c), relative(domain, c)) for c in zone_candidates(domain)]
        zone = await self._transact(body, prefetch=reads)
        # DEBUG: the engine's `job` line (or the workloads file's summary) tells the operator
        # which workload was applied with which outcome, one line per workload, not two.
        log.debug(
            "subdomain %s (zone %s) of user %s -> %s", domain, zone, user, list(map(str, ips))
        )

    async def remove_subdomain(self, user: str, domain: str, ips: Sequence[IPAddress]) -> None:
        """Remove `ips` from the user's `domain` (all its addresses if `ips` is empty).

        Another user's name is left untouched (logged); a name already gone is fine.
        """

        async def body(txn: Transaction) -> None:
            claimed = as_text(await txn.hget(MANAGED_DOMAINS_KEY, domain))
            if claimed and claimed != user:
                log.warning(
                    "user %s cannot remove subdomain %s of another user; left untouched",
                    user,
                    domain,
                )
                txn.multi()
                return
            found = await closest_zone(txn, domain)
            if found is None:
                txn.multi()
                if claimed:
                    txn.hdel(MANAGED_DOMAINS_KEY, domain)
                return
            zone, zone_owner = found
            if not claimed and zone_owner != user:
                txn.multi()  # nobody's name, or a name in someone else's zone: not ours
                return
            field = relative(domain, zone)
            await txn.watch(zone_key(zone))
            raw = await txn.hget(zone_key(zone), field)
            records = load_record_set(raw)
            drop = {str(ip) for ip in ips}
            for kind in ("a", "aaaa"):
                entries = [e for e in records.get(kind) or [] if isinstance(e, dict)]
                kept = [e for e in entries if drop and e.get("ip") not in drop]
                if kept:
                    records[kind] = kept
                else:
                    records.pop(kind, None)
            txn.multi()
            changed = [field]
            if field != APEX_FIELD and _is_empty(records):
                txn.hdel(zone_key(zone), field)
                txn.hdel(MANAGED_DOMAINS_KEY, domain)
                if raw is None:
                    changed = []  # already gone: the zone does not change (no field to name)
            else:
                txn.hset(zone_key(zone), field, record_set_value(records))
                if field == APEX_FIELD and not (records.get("a") or records.get("aaaa")):
                    txn.hdel(MANAGED_DOMAINS_KEY, domain)
                    txn.hdel(zone_key(zone), "")  # where the Go daemon put apex names
                    changed.append("")
            if changed:
                txn.publish(DNS_CHANNEL, dns_change(zone, *changed))

        await self._transact(body)

    # ----- delegated domains -----

    async def add_delegation(self, user: str, domain: str, identity: str | None = None) -> None:
        """Serve zone `domain` for `user` (owner entry, `__owner__` and `_tfgateway` TXT,
        SOA/NS apex), if `user` may: never a public suffix, never around another user's or the
        gateway's names, proxies or zones, and with proof of control (`name_proofs.py`). A live
        delegation whose proof lapsed is withdrawn (suspended) instead."""
        memo: dict[tuple[str, str], Verdict] = {}
        if is_public_suffix(domain):
            if is_reapplying():
                await self._transact(lambda txn: self._queue_zone_removal(txn, domain, user))
                log.warning("zone %s of user %s withdrawn: it is a public suffix", domain, user)
                return
            raise ProvisionError(
                f"cannot delegate domain {domain}: it is a public suffix (Public Suffix List); "
                "names under it belong to different owners"
            )

        async def body(txn: Transaction) -> bool:
            owner = await zone_owner(txn, domain)
            if owner == self.identity:
                raise ProvisionError(f"{domain} is a domain managed by this gateway")
            self._check_reserved(domain, zone=True)
            if owner is not None and owner != user:
                raise NameHeldError(f"cannot delegate domain {domain}: owned by another user")
            await self._refuse_foreign_inside(txn, user, domain)
            held = owner == user
            managed = self.proofs.managed_domains
            if await proof_needed(txn, user, domain, self.identity, managed=managed, zone=True):
                serve = await self.proofs.claim(txn, ZONE, domain, user, held=held, memo=memo)
            else:
                await self.proofs.release(txn, ZONE, domain, user)
                serve = True
            if not serve:
                await self._queue_zone_removal(txn, domain, user)
                return False
            await txn.watch(zone_key(domain))
            await self._queue_zone_metadata(txn, domain, user, identity or self.identity)
            return True

        if await self._transact(body):
            log.info("zone %s delegated to user %s", domain, user)

    async def _refuse_foreign_inside(self, txn: Transaction, user: str, domain: str) -> None:
        """Refuse a delegation of `domain` around what is not `user`'s: zones of other users or
        the gateway above or below it, another user's subdomain claim or proxy on it or under
        it (every service under it is read, with the generation every proxy write moves, so
        a proxy appearing meanwhile makes the check run again)."""
        labels = domain.split(".")
        ancestors = [".".join(labels[i:]) for i in range(1, len(labels) - 1)]
        if ancestors:
            for zone, value in zip(
                ancestors, await txn.hmget(ZONE_OWNERS_KEY, ancestors), strict=True
            ):
                other = zone_owner_of(value)
                if other is not None and other != user:
                    whose = "this gateway" if other == self.identity else "another user"
                    raise NameHeldError(
                        f"cannot delegate domain {domain}: it is inside {zone}, which "
                        f"belongs to {whose}"
                    )
        suffix = "." + domain
        for raw_zone, value in (await txn.hgetall(ZONE_OWNERS_KEY)).items():
            zone = as_text(raw_zone) or ""
            other = zone_owner_of(value)
            if zone.endswith(suffix) and other is not None and other != user:
                raise NameHeldError(
                    f"cannot delegate domain {domain}: {zone} inside it belongs to "
                    "another user or to this gateway"
                )
        claimed = as_text(await txn.hget(MANAGED_DOMAINS_KEY, domain))
        if claimed and claimed != user:
            raise NameHeldError(f"cannot delegate domain {domain}: reserved by another user")
        await require_no_other_proxy(txn, user, domain)
        await txn.get(PROXY_GENERATION_KEY)
        async for key in self._redis.scan_iter(match=proxy_keys_pattern(domain), count=1000):
            name = domain_of_key(key)
            proxied_by = await proxy_owner(txn, name)
            if proxied_by is not None and proxied_by != user:
                raise ProvisionError(
                    f"cannot delegate domain {domain}: {name} inside it is served by another "
                    "user's proxy"
                )

    async def remove_delegation(self, user: str, domain: str) -> None:
        """Stop serving the user's zone: delete `<domain>.`, its owner and its names' owners.

        Another user's (or the gateway's) zone is left untouched (logged).
        """

        async def body(txn: Transaction) -> bool:
            await self.proofs.release(txn, ZONE, domain, user)
            return await self._queue_zone_removal(txn, domain, user)

        if await self._transact(body):
            log.info("zone %s of user %s removed", domain, user)

    async def _withdraw_zone(self, txn: Transaction, domain: str, user: str) -> None:
        """The zone of `user` stops being served (its proof lapsed); the record says why."""
        await self._queue_zone_removal(txn, domain, user)

    async def _queue_zone_removal(self, txn: Transaction, domain: str, user: str) -> bool:
        """Queue the removal of `user`'s zone `domain` (zone hash, owner, the user's names in
        it); False when there was nothing of the user's to remove."""
        owner = await zone_owner(txn, domain)
        if owner is None:
            # The Go daemon deleted the owner but left `<domain>.` (wrong key); clean up
            # such a leftover when its __owner__ record says it is this user's.
            txt = load_record_set(await txn.hget(zone_key(domain), OWNER_FIELD))
            texts = [e.get("text") for e in txt.get("txt") or [] if isinstance(e, dict)]
            mine = any(isinstance(t, str) and owner_from_txt(t) == user for t in texts)
            txn.multi()
            if mine:
                txn.delete(zone_key(domain))
                txn.publish(DNS_CHANNEL, zone_key(domain))
            return mine
        if owner != user:
            log.warning(
                "user %s cannot remove zone %s of another owner; left untouched", user, domain
            )
            txn.multi()
            return False
        names = [
            as_text(name) or ""
            for name, who in (await txn.hgetall(MANAGED_DOMAINS_KEY)).items()
            if as_text(who) == user
        ]
        nested = [
            z
            for z in (as_text(k) or "" for k in await txn.hkeys(ZONE_OWNERS_KEY))
            if z.endswith("." + domain)
        ]

        def inside(name: str, zone: str) -> bool:
            return name == zone or name.endswith("." + zone)

        # names of this zone only: those in a nested zone of the user stay with it
        stale = [n for n in names if inside(n, domain) and not any(inside(n, z) for z in nested)]
        txn.multi()
        txn.delete(zone_key(domain))
        txn.hdel(ZONE_OWNERS_KEY, domain)
        if stale:
            txn.hdel(MANAGED_DOMAINS_KEY, *stale)
        txn.publish(DNS_CHANNEL, zone_key(domain))
        return True


def _domain(doc: dict[str, Any]) -> str:
    try:
        return normalize_domain(doc.get("domain", ""))
    except ValidationError as exc:
        raise ProvisionError(str(exc)) from exc


class SubdomainProvisioner:
    """`subdomain` workloads: `{"domain", "destination": [ip, ...]}`."""

    def __init__(self, store: DNSStore) -> None:
        self.store = store

    async def provision(self, r: Reservation) -> bytes | None:
        doc = reservation_data(r, "subdomain")
        domain = _domain(doc)
        try:
            ips = validate_record_ips(doc.get("destination"))
        except ValidationError as exc:
            raise ProvisionError(str(exc)) from exc
        await self.store.add_subdomain(r.user_id, domain, ips)
        return None

    async def decommission(self, r: Reservation) -> None:
        found = reserved_domain(r, "subdomain")
        if found is None:
            return
        doc, domain = found
        ips: list[IPAddress] = []
        destination = doc.get("destination")
        if isinstance(destination, list):
            for value in destination:
                try:
                    ips.extend(validate_record_ips([value]))
                except ValidationError:
                    continue
        await self.store.remove_subdomain(r.user_id, domain, ips)


class DelegateProvisioner:
    """`domain_delegate` workloads: `{"domain"}`."""

    def __init__(self, store: DNSStore) -> None:
        self.store = store

    async def provision(self, r: Reservation) -> bytes | None:
        domain = _domain(reservation_data(r, "domain delegation"))
        await self.store.add_delegation(r.user_id, domain, r.node_id or None)
        return None

    async def decommission(self, r: Reservation) -> None:
        if (found := reserved_domain(r, "domain delegation")) is not None:
            await self.store.remove_delegation(r.user_id, found[1])
