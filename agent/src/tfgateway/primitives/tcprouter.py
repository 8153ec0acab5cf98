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

__all__ = ["PROXY_CHANNEL", "decode_service", "encode_service", "proxy_key"]

PROXY_CHANNEL = "tfgateway:proxy"
_KEY_PREFIX = "/tcprouter/service/"


def proxy_key(domain: str) -> str:
    return _KEY_PREFIX + domain


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
