"""tcprouter's service records in redis, as the Go daemon wrote them (data-plane spec §2.4).

Key `/tcprouter/service/<domain>` (lowercase), value = valkeyrie envelope
`{"Key":"<key>","Value":"<base64 of {"addr","clientsecret","tlsport","httpport","user"}>"}`.
The router (dataplane/router) reads them; after each change the domain is published on
`tfgateway:proxy`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tfgateway.model import gojson

__all__ = [
    "PROXY_CHANNEL",
    "PROXY_GENERATION_KEY",
    "decode_service",
    "domain_of_key",
    "encode_service",
    "proxy_key",
    "proxy_keys_pattern",
]

PROXY_CHANNEL = "tfgateway:proxy"
PROXY_GENERATION_KEY = "tfgateway:proxy:generation"
"""Changed (random token) whenever the agent creates a service on a new name: a check that
scans services (a delegation looking for other users' proxies inside its zone) reads it, so
its check-and-set fails if a service appeared meanwhile. The router does not read it."""
_KEY_PREFIX = "/tcprouter/service/"


def proxy_key(domain: str) -> str:
    return _KEY_PREFIX + domain


def proxy_keys_pattern(zone: str) -> str:
    """SCAN pattern of the services on names strictly under `zone` (an LDH name: no glob
    characters to escape)."""
    return f"{_KEY_PREFIX}*.{zone}"


def domain_of_key(key: bytes | str) -> str:
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return text.removeprefix(_KEY_PREFIX)


def encode_service(
    domain: str, *, addr: str = "", secret: str = "", tls_port: int = 0, http_port: int = 0,
    user: str,
) -> bytes:  # fmt: skip
    """The Go daemon's bytes for one tcprouter service."""
    inner = gojson.marshal(
        {
            "addr": addr,
            "clientsecret": secret,
            "tlsport": tls_port,
            "httpport": http_port,
            "user": user,
        }
    )
    return gojson.marshal(
        {"Key": proxy_key(domain), "Value": base64.b64encode(inner).decode("ascii")}
    )


def decode_service(value: bytes | str) -> dict[str, Any] | None:
    """The inner service object of an envelope (keys lowercased), None if undecodable."""
    try:
        outer = json.loads(value)
        if not isinstance(outer, dict):
            return None
        encoded = next((v for k, v in outer.items() if k.lower() == "value"), None)
        if not isinstance(encoded, str):
            return None
        inner = json.loads(base64.b64decode(encoded, validate=True))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(inner, dict):
        return None
    return {k.lower(): v for k, v in inner.items()}
