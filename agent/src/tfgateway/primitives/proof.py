"""Proof that a user controls a name: a TXT record at `_tfgateway.<name>` holding their user id.

Why a TXT record: only whoever controls the name's DNS can publish it, it names the one user
the owner authorises (an address record pointing at the gateway would authorise every user of
the gateway), and it can be published before the name points at the gateway, as ACME's DNS-01
`_acme-challenge` records are. A CNAME at `_tfgateway.<name>` is followed by the resolver, so an
owner can point many names at one record.

The lookup goes through the configured resolvers (`--proof-resolver`, else the host's
`/etc/resolv.conf`) with a total time limit, never cached. Its outcome is one of three: proven,
absent (a definitive answer that does not authorise the user: NXDOMAIN, no TXT, TXT for other
ids) and unknown (no usable answer: timeout, SERVFAIL, REFUSED). Callers refuse a new claim on
anything but proven and suspend a held name only on absent, so a resolver outage never takes a
live name down.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdtypes.ANY.TXT
import dns.resolver

__all__ = [
    "DEFAULT_TIMEOUT",
    "PROOF_LABEL",
    "ProofChecker",
    "ProofOutcome",
    "Verdict",
    "parse_resolver",
    "proof_name",
]

PROOF_LABEL: Final = "_tfgateway"
DEFAULT_TIMEOUT: Final = 5.0
MAX_SHOWN_VALUES: Final = 2
MAX_SHOWN_CHARS: Final = 40
MAX_CONCURRENT_LOOKUPS: Final = 256
"""Lookups in flight at once, whatever asks (new workloads, rechecks): a poll page (200) of
claims whose DNS never answers costs one timeout, not several."""


class ProofOutcome(enum.Enum):
    PROVEN = "proven"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one lookup; `reason` is for the user and the operator."""

    outcome: ProofOutcome
    reason: str

    @property
    def proven(self) -> bool:
        return self.outcome is ProofOutcome.PROVEN


def proof_name(name: str) -> str:
    """Where the proof for `name` lives."""
    return f"{PROOF_LABEL}.{name}"


def parse_resolver(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` → (address, port); ValueError with a clear message."""
    raw = text.strip()
    host, port = raw, 53
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"resolver {text!r}: expected [IPv6]:PORT")
        if rest:
            port = _port(text, rest[1:])
    elif raw.count(":") == 1:
        host, _, rest = raw.partition(":")
        port = _port(text, rest)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"resolver {text!r}: {host!r} is not an IP address") from None
    return address, port


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"resolver {text!r}: {value!r} is not a port (1-65535)")
    return int(value)


def _shown(values: Sequence[str]) -> str:
    """A few TXT values as the reason quotes them: printable ASCII only, bounded."""
    shown = []
    for value in values[:MAX_SHOWN_VALUES]:
        clean = "".join(c if " " <= c <= "~" else "?" for c in value)
        if len(clean) > MAX_SHOWN_CHARS:
            clean = clean[:MAX_SHOWN_CHARS] + "…"
        shown.append(repr(clean))
    more = f" and {len(values) - MAX_SHOWN_VALUES} more" if len(values) > MAX_SHOWN_VALUES else ""
    return ", ".join(shown) + more


class ProofChecker:
    """Looks proofs up through fixed resolvers (or the host's), each lookup bounded in time."""

    def __init__(
        self,
        resolvers: Sequence[tuple[str, int]] = (),
        timeout: float = DEFAULT_TIMEOUT,
        *,
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        self.timeout = timeout
        self.problem = ""
        """Why no lookup can succeed (no resolver configured); empty when fine."""
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        if resolvers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in resolvers
            ]
        else:
            try:
                self._resolver.read_resolv_conf(resolv_conf)
            except dns.resolver.NoResolverConfiguration:
                self.problem = f"no resolver: {resolv_conf} names none; pass --proof-resolver"
        self._resolver.cache = None
        self._resolver.retry_servfail = False
        self._gate = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)

    @property
    def resolvers(self) -> list[str]:
        """The resolvers as `IP:PORT` (`[IPv6]:PORT`), for the log."""
        shown = []
        for ns in self._resolver.nameservers:
            address, port = str(ns), 53
            if isinstance(ns, dns.nameserver.Do53Nameserver):
                address, port = ns.address, ns.port
            shown.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
        return shown

    async def check(self, name: str, user: str) -> Verdict:
        """Whether `_tfgateway.<name>` holds `user` (one TXT record's strings, joined)."""
        where = proof_name(name)
        if self.problem:
            return Verdict(ProofOutcome.UNKNOWN, f"cannot look up {where}: {self.problem}")
        try:
            qname = dns.name.from_text(where)
        except dns.exception.DNSException:
            return Verdict(
                ProofOutcome.ABSENT, f"{name} is too long to have a proof record at {where}"
            )
        try:
            async with self._gate:
                answer = await self._resolver.resolve(
                    qname, "TXT", lifetime=self.timeout, search=False
                )
        except dns.resolver.NXDOMAIN:
            return Verdict(ProofOutcome.ABSENT, f"no TXT record at {where} (no such name)")
        except dns.resolver.NoAnswer:
            return Verdict(ProofOutcome.ABSENT, f"no TXT record at {where}")
        except dns.resolver.LifetimeTimeout:
            return Verdict(ProofOutcome.UNKNOWN, f"no answer for {where} within {self.timeout:g}s")
        except dns.resolver.NoNameservers:
            return Verdict(ProofOutcome.UNKNOWN, f"the DNS servers of {where} failed to answer")
        except dns.exception.DNSException as exc:
            return Verdict(ProofOutcome.UNKNOWN, f"cannot look up {where}: {exc}")
        values = []
        for rdata in answer:
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
                values.append(b"".join(rdata.strings).decode("utf-8", "replace").strip())
        if user in values:
            return Verdict(ProofOutcome.PROVEN, f"TXT {where} holds user {user}")
        return Verdict(
            ProofOutcome.ABSENT, f"the TXT records at {where} hold other ids: {_shown(values)}"
        )
