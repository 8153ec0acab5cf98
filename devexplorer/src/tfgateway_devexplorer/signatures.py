"""Server-side HTTP signature verification, as the explorer does it (spec §2).

Mirrors zaibon/httpsig `Verifier.Verify` with the explorer's `NodeKeyGetter`: parameters come
from the last `Authorization: Signature …` header through a lazy `name="value"` regex; the
required headers are `(created) date threebot-id`; the key is `base58decode(keyId)`; there is no
freshness check (replayable, as upstream). Kept separate from the agent's signer on purpose: the
two sides must be checked against each other, not share code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Mapping, Sequence
from email.utils import formatdate

import base58
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

REQUIRED_HEADERS = ("(created)", "date", "threebot-id")
CHALLENGE = 'Signature headers="(created) date threebot-id"'
_GO_ZERO_TIME_UNIX = -62135596800  # time.Time{}.Unix(): a missing `created` parameter
_PARAM_RE = re.compile(r'\s*?([a-zA-Z][a-zA-Z0-9_]*?)\s*?=\s*?"(.*?)"\s*?')
_ALGORITHMS = ("rsa-sha1", "rsa-sha256", "hmac-sha256", "ed25519")


class SignatureError(Exception):
    """Verification failed (→ 401 `unauthorized access: <message>`)."""


class Headers:
    """Minimal case-insensitive multi-value header view (of a request's header list or a dict)."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = list(items)

    def getall(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._items if key.lower() == wanted]

    def get(self, name: str) -> str | None:
        values = self.getall(name)
        return values[0] if values else None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> Headers:
        return cls(list(mapping.items()))


def _parse_int(text: str) -> int | None:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    if not -(2**63) <= value <= 2**63 - 1:
        return None
    return value


def _params(headers: Headers) -> dict[str, object] | None:
    # last well-formed `Signature ` header wins
    for value in reversed(headers.getall("Authorization")):
        if not value.startswith("Signature "):
            continue
        matches = _PARAM_RE.findall(value[len("Signature ") :])
        if not matches:
            continue
        params: dict[str, object] = {}
        for name, text in matches:
            if name == "keyId":
                params["keyId"] = text
            elif name == "algorithm":
                if text.strip() in _ALGORITHMS:
                    params["algorithm"] = text.strip()
            elif name == "headers":
                params["headers"] = [h.lower() for h in text.split(" ") if h]
            elif name == "signature":
                with contextlib.suppress(binascii.Error, ValueError):
                    params["signature"] = base64.b64decode(text, validate=True)
            elif name in ("created", "expires"):
                number = _parse_int(text)
                if number is not None:
                    params[name] = number
        return params
    return None


def signing_string(
    headers: Headers,
    signed: Sequence[str],
    created: int,
    expires: int,
    method: str = "GET",
    path: str = "/",
    host: str = "",
) -> bytes:
    """Rebuild the signing string (httpsig `BuildSignatureString`)."""
    lines: list[str] = []
    for name in signed or ["(created)"]:
        if name == "(request-target)":
            lines.append(f"{name}: {method.lower()} {path}")
        elif name == "(created)":
            lines.append(f"{name}: {created}")
        elif name == "(expires)":
            lines.append(f"{name}: {expires}")
        elif name == "host":
            lines.append(f"{name}: {host}")
        elif name == "date":
            # a missing Date is filled with the server's current time (so it never verifies)
            lines.append(f"{name}: {headers.get('date') or formatdate(usegmt=True)}")
        else:
            values = headers.getall(name)
            if not values:
                raise SignatureError(f"expected {name} to exists")
            lines.extend(f"{name}: {v.strip()}" for v in values)
    return "\n".join(lines).encode()


def verify(headers: Headers, method: str = "GET", path: str = "/", host: str = "") -> str:
    """Verify a gateway request; returns the keyId or raises SignatureError."""
    params = _params(headers)
    if params is None:
        raise SignatureError("no params present")
    key_id = str(params.get("keyId", ""))
    if not key_id:
        raise SignatureError("keyId is required")
    algorithm = str(params.get("algorithm", ""))
    if not algorithm:
        raise SignatureError("algorithm is required")
    signature = params.get("signature", b"")
    assert isinstance(signature, bytes)
    if not signature:
        raise SignatureError("signature is required")
    signed_obj = params.get("headers") or ["date"]
    assert isinstance(signed_obj, list)
    signed: list[str] = signed_obj
    for required in REQUIRED_HEADERS:
        if required not in signed:
            raise SignatureError(f'missing required header in signature "{required}"')
    created = params.get("created", _GO_ZERO_TIME_UNIX)
    expires = params.get("expires", _GO_ZERO_TIME_UNIX)
    assert isinstance(created, int)
    assert isinstance(expires, int)
    data = signing_string(headers, signed, created, expires, method, path, host)
    if algorithm != "ed25519":
        raise SignatureError(f'algorithm "{algorithm}" is not supported by key "{key_id}"')
    try:
        public_key = base58.b58decode(key_id)
    except ValueError:
        public_key = b""  # go-base58 returns an empty slice for invalid input
    if len(public_key) != 32:
        raise SignatureError("public key has the wrong size")
    try:
        VerifyKey(public_key).verify(data, signature)
    except (BadSignatureError, ValueError):
        raise SignatureError("signature verification failed") from None
    return key_id
