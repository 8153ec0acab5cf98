"""Byte-exact Go `encoding/json` output from Python values.

The Go daemon's redis values, cache entries and result signatures are bytes produced by Go's
`json.Marshal`; a drop-in replacement must produce the same bytes, so `json.dumps` is not enough
(HTML escaping, float format, `[]byte` as base64, raw messages compacted).

Mapping: `None` → null, `bool`, `int`, `float` (Go float64 format), `str` (Go escaping; lone
surrogates become U+FFFD like invalid UTF-8 in Go), `bytes` → base64 (Go `[]byte`), `dict` with
`str` keys in insertion order (Go structs; sort the keys yourself where Go marshals a map),
`list`/`tuple`, `RawJSON` (Go `json.RawMessage`), `Number` (Go `json.Number`).

Target: Go before 1.22, because the output must equal what the Go daemon (release binaries
built with Go 1.14) writes: the redis values and caches the agent shares with it, result
signatures, request bodies to the explorer. The one difference from newer Go: U+0008 and
U+000C are written `\\u0008`/`\\u000c` (Go 1.22 made them `\\b`/`\\f`); readers treat both
alike. Held to the vectors Go 1.15.15 wrote (tests/vectors/gojson/go1.15.15.json, the oldest
Go reachable; Go 1.21.13 wrote the same bytes; what is known of 1.14:
tests/vectors/gojson/README.md).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from tfgateway.model import fastjson

__all__ = [
    "GoJSONError",
    "Number",
    "RawJSON",
    "compact",
    "encode",
    "format_float",
    "loads_preserving_numbers",
    "marshal",
    "parse_semver",
    "raw_text",
    "split_versioned",
    "string",
]


class GoJSONError(ValueError):
    """A value Go's encoder would refuse (NaN, non-string key, invalid raw JSON, ...)."""


class RawJSON:
    """Already-encoded JSON embedded verbatim (compacted and HTML-escaped, as Go does).

    Empty bytes encode as `null` (Go marshals a nil `json.RawMessage` as `null`).
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw or b""

    def __repr__(self) -> str:
        return f"RawJSON({self.raw!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJSON) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class Number(str):
    """A JSON number kept as its literal text (Go `json.Number`), written verbatim."""

    __slots__ = ()


_HEX = "0123456789abcdef"


def _build_escape_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for b in range(0x20):
        table[b] = "\\u00" + _HEX[b >> 4] + _HEX[b & 0xF]
    table[ord("\n")] = "\\n"
    table[ord("\r")] = "\\r"
    table[ord("\t")] = "\\t"
    table[ord('"')] = '\\"'
    table[ord("\\")] = "\\\\"
    table[ord("<")] = "\\u003c"
    table[ord(">")] = "\\u003e"
    table[ord("&")] = "\\u0026"
    table[0x2028] = "\\u2028"
    table[0x2029] = "\\u2029"
    for s in range(0xD800, 0xE000):  # lone surrogates: Go writes U+FFFD for invalid UTF-8
        table[s] = "\\ufffd"
    return table


_ESCAPES = _build_escape_table()
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')


def _string(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    return '"' + s.translate(_ESCAPES) + '"'


def string(s: str) -> str:
    """A Python `str` as Go writes a string (quoted and escaped): what `marshal` writes for
    it, as text (callers that assemble a document themselves encode the whole once)."""
    return _string(s)


def raw_text(raw: bytes) -> str:
    """`RawJSON(raw)` as `marshal` writes it, as text (invalid UTF-8 kept as surrogates,
    which `marshal`'s final `surrogateescape` encoding turns back into the bytes)."""
    return compact(raw).decode("utf-8", "surrogateescape") if raw else "null"


def format_float(f: float) -> str:
    """Go's float64 JSON format: shortest digits, `%f` style unless tiny/huge, then `1e-7`."""
    if math.isnan(f) or math.isinf(f):
        raise GoJSONError(f"json: unsupported value: {f!r}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digits, exp = Decimal(repr(f)).normalize().as_tuple()
    assert isinstance(exp, int)
    mantissa = "".join(map(str, digits))
    prefix = "-" if sign else ""
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        # d.ddde±XX with at least two exponent digits, then Go's json trims "e-0X" to "e-X"
        point_exp = exp + len(mantissa) - 1
        body = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
        exp_text = f"{'-' if point_exp < 0 else '+'}{abs(point_exp):02d}"
        if exp_text.startswith("-0"):
            exp_text = "-" + exp_text[2:]
        return f"{prefix}{body}e{exp_text}"
    if exp >= 0:
        return prefix + mantissa + "0" * exp
    point = len(mantissa) + exp
    if point > 0:
        return prefix + mantissa[:point] + "." + mantissa[point:]
    return prefix + "0." + "0" * (-point) + mantissa


_WS = b" \t\r\n"
_COMPACT_CHANGES = re.compile(rb"[ \t\r\n<>&\xe2]")
"""Bytes `compact` may drop or rewrite (whitespace, HTML characters, the first byte of
U+2028/U+2029); raw JSON without any is returned as it is."""


def compact(raw: bytes) -> bytes:
    """Go `json.Compact` with HTML escaping, after checking the bytes are one valid JSON value.

    Like Go's scanner, any byte from 0x20 up is accepted inside a string and kept as it is,
    invalid UTF-8 included (decoded with `surrogateescape` only to be checked); a byte order
    mark is refused, as Go does.
    """
    try:
        if not fastjson.valid(raw):  # orjson is stricter: what it reads, this reads too
            json.loads(raw.decode("utf-8", "surrogateescape"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python goes
        raise GoJSONError(f"json: error calling MarshalJSON for raw message: {exc}") from exc
    if _COMPACT_CHANGES.search(raw) is None:
        return bytes(raw)  # already compact, nothing to escape: the loop would copy it as is
    out = bytearray()
    in_string = False
    escaped = False
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if in_string:
            if escaped:
                escaped = False
                out.append(c)
            elif c == 0x5C:  # backslash
                escaped = True
                out.append(c)
            elif c == 0x22:
                in_string = False
                out.append(c)
            elif c == 0x3C:
                out += b"\\u003c"
            elif c == 0x3E:
                out += b"\\u003e"
            elif c == 0x26:
                out += b"\\u0026"
            elif c == 0xE2 and raw[i + 1 : i + 3] in (b"\x80\xa8", b"\x80\xa9"):
                out += b"\\u2028" if raw[i + 2] == 0xA8 else b"\\u2029"
                i += 2
            else:
                out.append(c)
        elif c in _WS:
            pass
        else:
            if c == 0x22:
                in_string = True
            out.append(c)
        i += 1
    return bytes(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")


def _encode(obj: Any, parts: list[str]) -> None:
    # Fast paths for the exact built-in types that make up nearly every document (the ABC
    # checks below are slow); each does exactly what its general branch further down does.
    kind = type(obj)
    if kind is str:
        parts.append(_string(obj))
        return
    if kind is dict:
        _encode_mapping(obj, parts)
        return
    if kind is int:
        parts.append(int.__repr__(obj))
        return
    if kind is list:
        _encode_sequence(obj, parts)
        return
    if obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif isinstance(obj, Number):
        parts.append(str.__str__(obj))
    elif isinstance(obj, str):
        parts.append(_string(obj))
    elif isinstance(obj, int):
        parts.append(int.__repr__(obj))
    elif isinstance(obj, float):
        parts.append(format_float(obj))
    elif isinstance(obj, RawJSON):
        parts.append(compact(obj.raw).decode("utf-8", "surrogateescape") if obj.raw else "null")
    elif isinstance(obj, bytes | bytearray | memoryview):
        parts.append('"' + base64.b64encode(bytes(obj)).decode("ascii") + '"')
    elif isinstance(obj, Mapping):
        _encode_mapping(obj, parts)
    elif isinstance(obj, Sequence):
        _encode_sequence(obj, parts)
    else:
        raise GoJSONError(f"json: unsupported type {type(obj).__name__}")


_KEYS: dict[str, str] = {}
"""Encoded object keys with their colon: the few field names of the gateway's structs come
back in every document (bounded by `_KEYS_MAX`; other keys are encoded each time)."""
_KEYS_MAX = 1024


def _encode_mapping(obj: Mapping[Any, Any], parts: list[str]) -> None:
    separator = "{"
    for key, value in obj.items():
        head = _KEYS.get(key) if type(key) is str else None
        if head is None:
            if not isinstance(key, str):
                raise GoJSONError(f"json: unsupported key type {type(key).__name__}")
            head = _string(key) + ":"
            if type(key) is str and len(_KEYS) < _KEYS_MAX:
                _KEYS[key] = head
        parts.append(separator)
        parts.append(head)
        separator = ","
        _encode(value, parts)
    parts.append("{}" if separator == "{" else "}")


def _encode_sequence(obj: Sequence[Any], parts: list[str]) -> None:
    parts.append("[")
    for i, item in enumerate(obj):
        if i:
            parts.append(",")
        _encode(item, parts)
    parts.append("]")


def marshal(obj: Any) -> bytes:
    """Go `json.Marshal(obj)`."""
    parts: list[str] = []
    _encode(obj, parts)
    # Strings have no surrogates left (they became \ufffd); any left are the invalid bytes of
    # a RawJSON, which Go copies through: surrogateescape gives those bytes back.
    return "".join(parts).encode("utf-8", "surrogateescape")


def encode(obj: Any) -> bytes:
    """Go `json.NewEncoder(w).Encode(obj)`: the marshalled bytes plus a newline."""
    return marshal(obj) + b"\n"


def loads_preserving_numbers(data: bytes | str) -> Any:
    """Decode JSON keeping key order and every number's literal text (as `Number`).

    Re-marshalling the result gives what Go writes for the same `json.RawMessage`.
    """
    return json.loads(
        data,
        parse_float=Number,
        parse_int=Number,
        parse_constant=_reject_constant,
    )


_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


def parse_semver(text: str) -> tuple[int, int, int, str] | None:
    """(major, minor, patch, prerelease) of a semantic version, or None if it is not one."""
    m = _SEMVER.match(text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4) or ""


def split_versioned(data: bytes) -> tuple[tuple[int, int, int, str] | None, bytes]:
    """Split a ZOS "versioned" blob: a JSON-string semver header then the payload.

    Mirrors Go's reader: the first JSON value must be a string holding a semantic version,
    otherwise the whole blob is the (unversioned) payload. The payload is every byte after the
    closing quote, leading whitespace included.
    """
    i = 0
    while i < len(data) and data[i] in _WS:
        i += 1
    if i >= len(data) or data[i] != 0x22:
        return None, data
    j = i + 1
    while j < len(data):
        c = data[j]
        if c == 0x5C:
            j += 2
            continue
        if c == 0x22:
            break
        if c < 0x20:
            return None, data
        j += 1
    else:
        return None, data
    try:
        header = json.loads(data[i : j + 1].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None, data
    version = parse_semver(header) if isinstance(header, str) else None
    if version is None:
        return None, data
    return version, data[j + 1 :]
