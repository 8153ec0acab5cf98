"""tcprouter's service records in redis, as the Go daemon wrote them (data-plane spec §2.4).

Key `/tcprouter/service/<domain>` (lowercase), value = valkeyrie envelope
`{"Key":"<key>","Value":"<base64 of {"addr","clientsecret","tlsport","httpport","user"}>"}`.
The router (dataplane/router) reads them; after each change the domain is published on
`tfgateway:proxy`. tfrouter's optional keys (`terminate`, `redirect`, `proxyprotocol`, see
`RouteOptions`) follow `user` only in records that use them, so every other record keeps the
Go daemon's bytes and tcprouter's `trs` ignores them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

from tfgateway.model import gojson

__all__ = [
    "PASSTHROUGH",
    "PROXY_CHANNEL",
    "PROXY_GENERATION_KEY",
    "RouteOptions",
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


Termination = Literal["", "http", "tcp"]


@dataclass(frozen=True)
class RouteOptions:
    """What tfrouter does beyond tcprouter for one route (dataplane/router README).

    `terminate`: "" passes TLS through (tcprouter); "http" terminates it with the gateway's
    certificate and forwards HTTP with X-Forwarded-For/-Proto/-Host to the plain port (or the
    tunnel client's --local); "tcp" forwards the decrypted bytes there. `redirect`: port 80
    answers with a redirect to HTTPS. `proxy_protocol`: 1 or 2, the PROXY protocol header
    the backend gets first (0: none).
    """

    terminate: Termination = ""
    redirect: bool = False
    proxy_protocol: int = 0

    def keys(self) -> dict[str, object]:
        """The optional keys that differ from tcprouter's behaviour, in the record's order."""
        keys: dict[str, object] = {}
        if self.terminate:
            keys["terminate"] = self.terminate
        if self.redirect:
            keys["redirect"] = True
        if self.proxy_protocol:
            keys["proxyprotocol"] = self.proxy_protocol
        return keys


PASSTHROUGH = RouteOptions()


def proxy_keys_pattern(zone: str) -> str:
    """SCAN pattern of the services on names strictly under `zone` (an LDH name: no glob
    characters to escape)."""
    return f"{_KEY_PREFIX}*.{zone}"


def domain_of_key(key: bytes | str) -> str:
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return text.removeprefix(_KEY_PREFIX)


def encode_service(
    domain: str, *, addr: str = "", secret: str = "", tls_port: int = 0, http_port: int = 0,
    user: str, options: RouteOptions = PASSTHROUGH,
) -> bytes:  # fmt: skip
    """The Go daemon's bytes for one tcprouter service (plus `options`' keys, if any)."""
    inner = gojson.marshal(
        {
            "addr": addr,
            "clientsecret": secret,
            "tlsport": tls_port,
            "httpport": http_port,
            "user": user,
            **options.keys(),
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
