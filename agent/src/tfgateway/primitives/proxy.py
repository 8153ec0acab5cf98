"""Proxy and reverse-proxy primitives: tcprouter service records in redis (data-plane §2.4).

The records are tcprouter's (`tcprouter.py`), byte-compatible with the Go daemon. Better than
upstream: the target must be an IP literal that cannot reach the gateway itself
(`validation.validate_proxy_target`); the domain may not be a name another user holds
(`ownership.py`); a name outside the gateway's domains and the user's zones needs proof of
control (`name_proofs.py`); the checks and the write are one atomic check-and-set.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

from tfgateway.model.reservation import Reservation
from tfgateway.node.crypto import DecryptError, decrypt_secret
from tfgateway.node.identity import Identity
from tfgateway.primitives.coredns_redis import ZONE_OWNERS_KEY
from tfgateway.primitives.name_proofs import PROXY, NameProofs
from tfgateway.primitives.ownership import (
    name_reads,
    proof_needed,
    proxy_owner,
    require_proxy_allowed,
)
from tfgateway.primitives.proof import Verdict
from tfgateway.primitives.provisioner import ProvisionError, reservation_data, reserved_domain
from tfgateway.primitives.tcprouter import (
    PROXY_CHANNEL,
    PROXY_GENERATION_KEY,
    RouteOptions,
    encode_service,
    proxy_key,
)
from tfgateway.primitives.termination import NO_TERMINATION, TerminationPolicy
from tfgateway.primitives.validation import (
    IPAddress,
    ValidationError,
    normalize_domain,
    validate_proxy_target,
)
from tfgateway.store.batch import AutoPipeline, as_batch
from tfgateway.store.transaction import Read, Transaction, TransactionConflictError, run_transaction

__all__ = ["ProxyProvisioner", "ProxyStore", "ReverseProxyProvisioner"]

log = logging.getLogger(__name__)


class ProxyStore:
    """Atomic, ownership- and proof-checked writes of tcprouter services."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | AutoPipeline,
        gateway_node_id: str,
        *,
        proofs: NameProofs,
    ) -> None:
        self._batch = as_batch(redis_client)
        self.gateway_node_id = gateway_node_id
        self.proofs = proofs
        proofs.register(PROXY, self._withdraw)

    async def put(self, user: str, domain: str, value: bytes) -> None:
        """Set the service on `domain` for `user`, unless another user owns the name or the
        user cannot prove control of it; a live route whose proof lapsed is withdrawn."""
        memo: dict[tuple[str, str], Verdict] = {}

        async def body(txn: Transaction) -> None:
            await require_proxy_allowed(txn, user, domain, self.gateway_node_id)
            current = await proxy_owner(txn, domain)
            held = current == user
            managed = self.proofs.managed_domains
            if await proof_needed(txn, user, domain, self.gateway_node_id, managed=managed):
                serve = await self.proofs.claim(txn, PROXY, domain, user, held=held, memo=memo)
            else:
                await self.proofs.release(txn, PROXY, domain, user)
                serve = True
            txn.multi()
            if serve:
                txn.set(proxy_key(domain), value)
                if current is None:
                    _created(txn)
            elif held:
                txn.delete(proxy_key(domain))
            else:
                return
            txn.publish(PROXY_CHANNEL, domain)

        # The body's reads, fetched in one round trip.
        reads = [*name_reads(domain), ("hget", ZONE_OWNERS_KEY, domain)]
        await self._transact(body, reads + self.proofs.reads(PROXY, domain))

    async def remove_reserved(self, r: Reservation, what: str) -> None:
        """Remove the route of `r` (a `what` workload), if it ever had a valid name."""
        if (found := reserved_domain(r, what)) is not None:
            await self.remove(r.user_id, found[1])

    async def remove(self, user: str, domain: str) -> None:
        """Delete the user's service on `domain`; another user's is left untouched."""

        async def body(txn: Transaction) -> None:
            current = await proxy_owner(txn, domain)
            await self.proofs.release(txn, PROXY, domain, user)
            txn.multi()
            if current is None:
                return
            if current != user:
                log.warning(
                    "user %s cannot remove the proxy on %s of another user; left untouched",
                    user,
                    domain,
                )
                return
            txn.delete(proxy_key(domain))
            txn.publish(PROXY_CHANNEL, domain)

        await self._transact(body)

    async def _withdraw(self, txn: Transaction, domain: str, user: str) -> None:
        """The route of `user` on `domain` goes (its proof lapsed); the record says why."""
        if await proxy_owner(txn, domain) == user:
            txn.delete(proxy_key(domain))
            txn.publish(PROXY_CHANNEL, domain)

    async def _transact(
        self, body: Callable[[Transaction], Awaitable[None]], prefetch: Sequence[Read] = ()
    ) -> None:
        try:
            await run_transaction(self._batch, body, prefetch=prefetch)
        except TransactionConflictError:
            raise ProvisionError("proxy data is changing too fast; try again later") from None
        except RedisError as exc:
            raise ProvisionError(f"proxy store error: {exc}") from exc


def _created(txn: Transaction) -> None:
    """A service on a new name: move the generation a delegation's scan checks
    (`PROXY_GENERATION_KEY`); changes of existing services are checked per key."""
    txn.set(PROXY_GENERATION_KEY, secrets.token_hex(8))


def _port(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ProvisionError(f"{key} must be a port number between 0 and 65535")
    return value


def _route_options(
    doc: dict[str, Any], domain: str, termination: TerminationPolicy, *, declared: bool,
    plain_backend: bool,
) -> RouteOptions:  # fmt: skip
    """An explorer workload's route options come from the operator's `--terminate-tls`; an
    entry of the operator's workloads file carries its own (`terminate_tls`, `proxy_protocol`)."""
    if not declared:
        return termination.options(domain, plain_backend=plain_backend)
    terminate = doc.get("terminate_tls") is True and plain_backend
    protocol = doc.get("proxy_protocol", 0)
    if isinstance(protocol, bool) or protocol not in (0, 1, 2):
        raise ProvisionError("proxy_protocol must be 0, 1 or 2")
    return RouteOptions(
        terminate="http" if terminate else "",
        redirect=termination.redirect and terminate,
        proxy_protocol=protocol,
    )


def _normalized(domain: object) -> str:
    try:
        return normalize_domain(domain)
    except ValidationError as exc:
        raise ProvisionError(str(exc)) from exc


class ProxyProvisioner:
    """`proxy` workloads: `{"domain","addr","port","port_tls"}` → a tcprouter service.

    With `declared` (the operator's workloads file) the data may also say `terminate_tls` and
    `proxy_protocol`."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | AutoPipeline,
        gateway_node_id: str,
        *,
        proofs: NameProofs,
        own_addresses: Collection[IPAddress | str] = (),
        allow_private: bool = False,
        termination: TerminationPolicy = NO_TERMINATION,
        declared: bool = False,
    ) -> None:
        """`own_addresses` is read at every provision, so a list the caller keeps up to date
        (addresses added to the host later) is honoured without rebuilding the provisioner."""
        self.store = ProxyStore(redis_client, gateway_node_id, proofs=proofs)
        self.own_addresses = own_addresses
        self.allow_private = allow_private
        self.termination = termination
        self.declared = declared
        self._own: tuple[tuple[IPAddress | str, ...], frozenset[IPAddress]] = ((), frozenset())

    def _own_parsed(self) -> frozenset[IPAddress]:
        """`own_addresses` parsed, again only when the list changed (parsing them for every
        proxy cost more than the rest of the check)."""
        current = tuple(self.own_addresses)
        if current != self._own[0]:
            parsed = frozenset(
                ipaddress.ip_address(a) if isinstance(a, str) else a for a in current
            )
            self._own = (current, parsed)
        return self._own[1]

    async def provision(self, r: Reservation) -> bytes | None:
        doc = reservation_data(r, "proxy")
        domain = _normalized(doc.get("domain", ""))
        try:
            addr = validate_proxy_target(
                doc.get("addr", ""),
                own_addresses=self._own_parsed(),
                allow_private=self.allow_private,
            )
        except ValidationError as exc:
            raise ProvisionError(str(exc)) from exc
        http_port = _port(doc, "port")
        tls_port = _port(doc, "port_tls")
        if not http_port and not tls_port:
            raise ProvisionError("a proxy needs port or port_tls")
        value = encode_service(
            domain, addr=str(addr), tls_port=tls_port, http_port=http_port, user=r.user_id,
            options=_route_options(doc, domain, self.termination, declared=self.declared,
                                   plain_backend=http_port != 0),
        )  # fmt: skip
        await self.store.put(r.user_id, domain, value)
        # DEBUG: the engine's `job` line (or the workloads file's summary) is the INFO line.
        log.debug("proxy %s of user %s -> %s (http %d, tls %d)", domain, r.user_id, addr,
                  http_port, tls_port)  # fmt: skip
        return None

    async def decommission(self, r: Reservation) -> None:
        await self.store.remove_reserved(r, "proxy")


UserKey = Callable[[int], Awaitable[bytes]]


class ReverseProxyProvisioner:
    """`reverse_proxy` workloads: `{"domain","secret"}`, the secret encrypted to the gateway.

    Version 0 secrets are sealed boxes; version ≥ 1 need the user's ed25519 key from the
    phonebook (`user_key(tid)`). The plaintext must start with `<customer_tid>:`. With
    `declared` (the operator's workloads file, owner 0) the secret is plain text, read from the
    operator's secret file, and the data carries the route options.
    """

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | AutoPipeline,
        identity: Identity,
        user_key: UserKey,
        *,
        proofs: NameProofs,
        termination: TerminationPolicy = NO_TERMINATION,
        declared: bool = False,
    ) -> None:
        self.store = ProxyStore(redis_client, identity.node_id, proofs=proofs)
        self.identity = identity
        self.user_key = user_key
        self.termination = termination
        self.declared = declared

    async def _decrypt(self, secret: str, r: Reservation) -> str:
        user_public_key: bytes | None = None
        if r.version != 0 and secret:
            try:
                tid = int(r.user_id)
            except ValueError:
                raise ProvisionError(
                    f"failed to decrypt secret: invalid user id {r.user_id!r}"
                ) from None
            try:
                user_public_key = await self.user_key(tid)
            except ProvisionError:
                raise
            except Exception as exc:
                raise ProvisionError(
                    f"failed to decrypt secret: cannot get the public key of user {tid}: {exc}"
                ) from exc
        try:
            plain = decrypt_secret(secret, r.version, self.identity, user_public_key)
        except DecryptError as exc:
            raise ProvisionError(f"failed to decrypt secret: {exc}") from exc
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise ProvisionError("failed to decrypt secret: secret is not valid UTF-8") from None

    async def provision(self, r: Reservation) -> bytes | None:
        doc = reservation_data(r, "reverse proxy")
        raw_secret = doc.get("secret", "")
        raw_domain = doc.get("domain", "")
        if not isinstance(raw_secret, str):
            raise ProvisionError("secret must be a string")
        secret = raw_secret if self.declared else await self._decrypt(raw_secret, r)
        if not raw_domain:
            raise ProvisionError("domain cannot be empty")
        if not secret:
            raise ProvisionError("secret cannot be empty")
        if not secret.startswith(f"{r.user_id}:"):
            raise ProvisionError("secret must follow the format 'threebotID:random'")
        domain = _normalized(raw_domain)
        options = _route_options(doc, domain, self.termination, declared=self.declared,
                                 plain_backend=True)  # fmt: skip
        await self.store.put(
            r.user_id,
            domain,
            encode_service(domain, secret=secret, user=r.user_id, options=options),
        )
        log.debug("reverse proxy %s of user %s", domain, r.user_id)
        return None

    async def decommission(self, r: Reservation) -> None:
        await self.store.remove_reserved(r, "reverse proxy")
