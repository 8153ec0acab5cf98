"""Validation of user-supplied names and addresses before they reach redis.

Domains end up as redis keys and hash fields that CoreDNS and the router look up lowercased,
so they are normalised here once (lowercase, no trailing dot) and anything that is not a plain
hostname is refused with a message the user can act on. Proxy targets are IP literals outside
the ranges that would let a user reach the gateway itself or its private networks through the
router (upstream accepted any string, so any user could proxy to the gateway's own redis).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence

from publicsuffixlist import PublicSuffixList

__all__ = [
    "IPAddress",
    "ValidationError",
    "is_public_suffix",
    "normalize_domain",
    "validate_proxy_target",
    "validate_record_ips",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DOMAIN_LENGTH = 253
MAX_LABEL_LENGTH = 63
MAX_RECORD_IPS = 64

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class ValidationError(ValueError):
    """User input that cannot be used; the message says what is wrong and how to fix it."""


def _check_a_label(label: str, domain: str) -> None:
    """An `xn--` label must be a real A-label: valid punycode of a non-ASCII U-label."""
    try:
        unicode = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError) as exc:
        raise ValidationError(
            f"domain {domain!r}: label {label!r} starts with 'xn--' but is not valid punycode"
        ) from exc
    if not unicode or unicode.isascii() or unicode != unicode.lower():
        raise ValidationError(
            f"domain {domain!r}: label {label!r} starts with 'xn--' but is not a valid IDNA A-label"
        )
    if "xn--" + unicode.encode("punycode").decode("ascii") != label:
        raise ValidationError(f"domain {domain!r}: label {label!r} is not in canonical punycode")


def normalize_domain(value: object, *, min_labels: int = 2) -> str:
    """The canonical form of a user's domain: lowercase ASCII, no trailing dot.

    Accepts RFC 1123 host names (letters, digits, hyphens; labels ≤ 63, name ≤ 253) with
    internationalised labels only in their ASCII `xn--` form; refuses wildcards, underscores,
    empty labels, unicode and numeric top-level labels (which look like IP addresses).
    """
    if not isinstance(value, str):
        raise ValidationError(f"domain must be a string, got {type(value).__name__}")
    fast = _fast_domain(value.strip(), min_labels)
    return fast if fast is not None else _checked_domain(value, min_labels=min_labels)


def _checked_domain(value: str, *, min_labels: int) -> str:
    """`normalize_domain` check by check, each refusal with its own message."""
    domain = value.strip()
    shown = domain if len(domain) <= 300 else domain[:300] + "…"
    if not domain:
        raise ValidationError("domain cannot be empty")
    if not domain.isascii():
        hint = ""
        try:
            hint = f"; use its IDNA (punycode) form, e.g. {domain.encode('idna').decode('ascii')!r}"
        except UnicodeError:
            hint = "; use its IDNA (punycode) xn-- form"
        raise ValidationError(f"domain {shown!r} contains non-ASCII characters{hint}")
    domain = domain.lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if len(domain) > MAX_DOMAIN_LENGTH:
        raise ValidationError(
            f"domain {shown!r} is too long: {len(domain)} characters, at most {MAX_DOMAIN_LENGTH}"
        )
    labels = domain.split(".")
    if len(labels) < min_labels:
        raise ValidationError(
            f"domain {shown!r} must have at least {min_labels} labels (like 'name.example.com')"
        )
    for label in labels:
        if not label:
            raise ValidationError(f"domain {shown!r} has an empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise ValidationError(
                f"domain {shown!r}: label {label[:20]!r}… is longer than {MAX_LABEL_LENGTH}"
            )
        if "*" in label:
            raise ValidationError(f"domain {shown!r}: wildcards are not allowed")
        if "_" in label:
            raise ValidationError(f"domain {shown!r}: underscores are not allowed in host names")
        if not _LABEL.fullmatch(label):
            raise ValidationError(
                f"domain {shown!r}: label {label!r} may only contain letters, digits and "
                "hyphens, and must not start or end with a hyphen"
            )
        if label[2:4] == "--":
            if not label.startswith("xn--"):
                raise ValidationError(
                    f"domain {shown!r}: label {label!r} has '--' in positions 3-4, which is "
                    "reserved for IDNA ('xn--')"
                )
            _check_a_label(label, shown)
    if labels[-1].isdigit():
        raise ValidationError(f"domain {shown!r}: the top-level label cannot be all digits")
    return domain


_PLAIN_NAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)
"""Lowercase LDH labels of 1-63 characters, no empty label, no leading or trailing hyphen."""


def _fast_domain(domain: str, min_labels: int) -> str | None:
    """The common name in one regular expression (the checks below one label at a time cost
    more than the rest of a proxy's validation); None sends it through every check (and
    their messages). Names with `--` anywhere take the long way (IDNA rules)."""
    if not domain.isascii():
        return None
    domain = domain.lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if (
        len(domain) <= MAX_DOMAIN_LENGTH
        and "--" not in domain
        and _PLAIN_NAME.fullmatch(domain) is not None
        and domain.count(".") + 1 >= min_labels
        and not domain.rpartition(".")[2].isdigit()
    ):
        return domain
    return None


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The public suffix list shipped with `publicsuffixlist` (ICANN and private sections:
    `co.uk` and `github.io` alike), parsed once (~50 ms)."""
    return PublicSuffixList()


def is_public_suffix(domain: str) -> bool:
    """Whether `domain` (normalised) is a public suffix: names under it belong to different
    owners (`co.uk`, `github.io`, `*.ck`), so nobody may delegate it as one zone. A top-level
    label the list does not know counts as a public suffix too."""
    return bool(_public_suffixes().is_public(domain))


_ip_address = functools.lru_cache(maxsize=4096)(ipaddress.ip_address)
"""`ipaddress.ip_address`, remembered: the same few backend and record addresses come back
in thousands of workloads, and parsing one cost more than the rest of its validation."""


def _parse_ip(value: object, what: str) -> IPAddress:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValidationError(f"{what} cannot be empty")
    try:
        ip = _ip_address(text)
    except ValueError:
        raise ValidationError(
            f"{what} {text[:100]!r} is not an IP address (give an IPv4 or IPv6 literal, no "
            "host name and no port)"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise ValidationError(f"{what} {text!r}: scoped IPv6 addresses are not allowed")
    return ip


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forbidden_reason(ip: IPAddress) -> str | None:
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    return None


def validate_proxy_target(
    addr: object,
    *,
    own_addresses: Iterable[IPAddress | str] = (),
    allow_private: bool = False,
) -> IPAddress:
    """The proxy target as an IP address, refused if it could reach the gateway itself.

    Never allowed: loopback, link-local, unspecified, multicast, reserved, site-local and the
    gateway's own addresses (also hidden in IPv4-mapped or NAT64 form). Private, shared (CGNAT)
    and other non-global ranges only with `allow_private`.
    """
    ip = _parse_ip(addr, "proxy target")
    own = {ipaddress.ip_address(a) if isinstance(a, str) else a for a in own_addresses}
    candidates: list[IPAddress] = [ip]
    inner = _embedded_v4(ip)
    if inner is not None:
        candidates.append(inner)
    for candidate in candidates:
        reason = _forbidden_reason(candidate)
        if reason is not None:
            raise ValidationError(f"proxy target {ip} is {reason}; give a public address")
        if candidate in own:
            raise ValidationError(f"proxy target {ip} is an address of this gateway")
        if not allow_private and not candidate.is_global:
            raise ValidationError(
                f"proxy target {ip} is a private or non-global address; this gateway only "
                "proxies to public addresses"
            )
    return ip


def validate_record_ips(ips: object) -> list[IPAddress]:
    """The addresses of a subdomain's A/AAAA records, deduplicated, in the order given.

    These are public DNS data the user chooses for their own name, so private and loopback
    addresses are allowed (split-horizon setups use them); what can never be a host address is
    refused: unparsable text, unspecified, multicast and reserved addresses. IPv4-mapped IPv6
    addresses become IPv4, as Go's `net.IP.To4` made them A records.
    """
    if not isinstance(ips, Sequence) or isinstance(ips, str | bytes):
        raise ValidationError("destination must be a list of IP addresses")
    if not ips:
        raise ValidationError("destination must contain at least one IP address")
    if len(ips) > MAX_RECORD_IPS:
        raise ValidationError(f"destination has {len(ips)} addresses, at most {MAX_RECORD_IPS}")
    out: list[IPAddress] = []
    for value in ips:
        ip = _parse_ip(value, "destination")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified:
            raise ValidationError(f"destination {ip} is an unspecified address")
        if ip.is_multicast:
            raise ValidationError(f"destination {ip} is a multicast address")
        if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:
            raise ValidationError(f"destination {ip} is a reserved address")
        if ip not in out:
            out.append(ip)
    return out
