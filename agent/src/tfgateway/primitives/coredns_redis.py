"""The coredns-redis zone layout the Go daemon wrote and the gatewaydns plugin reads.

Byte-compatible with the Go daemon (data-plane spec §0, §1.4-1.5):
- `<zone>.` hash: field = owner name relative to the zone (`@` = apex), value = record-set JSON
  (a Go map, so keys sorted: `a`, `aaaa`, `cname`, `ns`, `soa`, `txt`);
- `zone` hash: zone name without dot → `{"Owner":"<user or gateway node id>"}`;
- `managed_domains` hash: full subdomain name → owning user id;
- `__owner__` TXT in each zone: `{"identity":..,"owner":..}`, TTL 600.
After each change `ZONE FIELD...` is published on `tfgateway:dns` (`dns_change`): the plugin
reads just the named fields.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from tfgateway.model import fastjson, gojson

__all__ = [
    "APEX_FIELD",
    "DNS_CHANNEL",
    "MANAGED_DOMAINS_KEY",
    "OWNER_FIELD",
    "ZONE_OWNERS_KEY",
    "as_text",
    "dns_change",
    "load_record_set",
    "owner_from_txt",
    "owner_txt_value",
    "record_set_value",
    "relative",
    "zone_key",
    "zone_owner_of",
    "zone_owner_value",
]

log = logging.getLogger(__name__)

ZONE_OWNERS_KEY = "zone"
MANAGED_DOMAINS_KEY = "managed_domains"
OWNER_FIELD = "__owner__"
APEX_FIELD = "@"
DNS_CHANNEL = "tfgateway:dns"

RECORD_TTL = 3600
OWNER_TXT_TTL = 600
SOA_REFRESH = 7200
SOA_RETRY = 1800
SOA_EXPIRE = 1209600
SOA_MINTTL = 300


def zone_key(zone: str) -> str:
    """The redis key of a zone hash: lowercase name with a trailing dot."""
    return zone.rstrip(".") + "."


def dns_change(zone: str, *fields: str) -> str:
    """The `tfgateway:dns` payload for a change of `fields` in `zone`: `ZONE FIELD...`.

    The plugin then reads just those fields (one HMGET) instead of the whole zone hash, which
    is what keeps a change in a zone of 50,000 names as cheap as in a small one. Name exactly
    the fields the transaction changes, one HSET or HDEL each (the plugin takes that many
    keyspace events before the message for the transaction's own). The zone alone (read
    whole) when no field is given or one cannot be named in this space-separated form: the Go
    daemon's empty apex field. A reader that took the whole payload for a zone
    name would misread `ZONE FIELD...`; none exists on our gateways: the channel is this
    project's own (the Go daemon and the third-party redis plugins never used it) and the
    gatewaydns plugin reads both forms.
    """
    key = zone_key(zone)
    if not fields or any(not f or any(c.isspace() for c in f) for f in fields):
        return key
    return " ".join([key, *dict.fromkeys(fields)])


def as_text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def record_set_value(records: dict[str, Any]) -> bytes:
    """A record set as Go marshals its map: keys sorted, compact."""
    return gojson.marshal({k: records[k] for k in sorted(records)})


def owner_txt_value(identity: str, owner: str) -> bytes:
    """The `__owner__` record set (Go daemon bytes)."""
    text = gojson.marshal({"identity": identity, "owner": owner}).decode("utf-8")
    return record_set_value({"txt": [{"text": text, "ttl": OWNER_TXT_TTL}]})


def zone_owner_value(owner: str) -> bytes:
    return gojson.marshal({"Owner": owner})


def zone_owner_of(value: bytes | str | None) -> str | None:
    """Owner from a `zone` hash value; Go decodes the key case-insensitively."""
    if type(value) is bytes and len(value) <= 256:
        # The same few owners' values come back for every name (the managed domains): a
        # JSON decoding each time cost more than the rest of the ownership check.
        return _zone_owner_of_bytes(value)
    return _zone_owner_of(value)


@functools.lru_cache(maxsize=1024)
def _zone_owner_of_bytes(value: bytes) -> str | None:
    return _zone_owner_of(value)


def _zone_owner_of(value: bytes | str | None) -> str | None:
    text = as_text(value)
    if text is None:
        return None
    try:
        doc = fastjson.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    for key, val in doc.items():
        if key.lower() == "owner" and isinstance(val, str):
            return val
    return None


def load_record_set(value: bytes | str | None) -> dict[str, Any]:
    text = as_text(value)
    if not text:
        return {}
    try:
        doc = gojson.loads_preserving_numbers(text)
    except ValueError:
        log.warning("replacing undecodable DNS record set %r", text[:200])
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k.lower(): v for k, v in doc.items()}


def relative(domain: str, zone: str) -> str:
    """The field of `domain` in the hash of `zone` (`@` for the apex)."""
    return APEX_FIELD if domain == zone else domain[: -(len(zone) + 1)]


def owner_from_txt(value: str) -> str | None:
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    owner = doc.get("owner") if isinstance(doc, dict) else None
    return owner if isinstance(owner, str) else None
