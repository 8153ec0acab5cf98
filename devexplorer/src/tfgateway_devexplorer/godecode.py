"""Decode request bodies the way the explorer's Go handlers do (`json.NewDecoder(body).Decode`).

What matters for fidelity: one JSON value is read and anything after it ignored; `null` gives the
zero struct; unknown keys are ignored; keys match case-insensitively; a value of the wrong JSON
type or out of range for the Go field type is a 400 with Go's wording.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's decoder takes NaN and ±Infinity; Go not


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
# Go's decoder turns each invalid UTF-8 byte of a string into U+FFFD; Python's "replace" makes
# one of a whole broken sequence, so the bytes are kept (surrogateescape) and replaced here.
_INVALID_BYTES = dict.fromkeys(range(0xDC80, 0xDD00), "\ufffd")

# Go field kinds understood here, with their integer ranges.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 255),
    "uint16": (0, 65535),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


class DecodeError(ValueError):
    """The body is not what the Go handler would accept (→ 400 with this text)."""


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def read_one_value(body: bytes) -> Any:
    """The first JSON value of the body, like `json.Decoder.Decode` (trailing data ignored)."""
    text = body.decode("utf-8", "surrogateescape")
    if not text.isascii():  # (invalid bytes are lone surrogates now: never ASCII)
        text = text.translate(_INVALID_BYTES)
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise DecodeError("EOF")
    try:
        value, _ = _DECODER.raw_decode(stripped)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc.msg} at offset {exc.pos}") from None
    except ValueError as exc:  # NaN, Infinity
        raise DecodeError(f"invalid JSON: {exc}") from None
    return value


def _check(value: Any, kind: str, where: str) -> Any:
    """Validate one field value against a Go kind; returns the value (None → zero value)."""
    # The common valid cases first, without building any message; the rules below decide
    # everything else (and give the same answer for these).
    value_type = type(value)
    if value_type is str and (kind == "string" or kind == "date"):
        return value
    if value_type is int and kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if low <= value <= high:
            return value
    if kind == "raw":
        return value
    actual = _json_kind(value)
    if value is None:
        return None
    mismatch = f"json: cannot unmarshal {actual} into Go struct field {where} of type "
    if kind == "string":
        if actual != "string":
            raise DecodeError(mismatch + "string")
        return value
    if kind == "bool":
        if actual != "bool":
            raise DecodeError(mismatch + "bool")
        return value
    if kind == "float64":
        if actual != "number":
            raise DecodeError(mismatch + "float64")
        return float(value)
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if actual != "number":
            raise DecodeError(mismatch + kind)
        if isinstance(value, float) or not low <= value <= high:
            raise DecodeError(
                f"json: cannot unmarshal number {value} into Go struct field {where} of type {kind}"
            )
        return value
    if kind == "[]string":
        if actual != "array":
            raise DecodeError(mismatch + "[]string")
        for item in value:
            _check(item, "string", where)
        return value
    if kind == "raw":
        return value
    if kind == "date":  # schema.Date: a number, "" or a jumpscale date string
        if actual not in ("number", "string"):
            raise DecodeError(mismatch + "schema.Date")
        return value
    raise AssertionError(f"unknown Go kind {kind}")


_CANONICAL: dict[tuple[int, int], tuple[object, object, dict[str, str]]] = {}


def _canonical_keys(
    fields: dict[str, str], nested: dict[str, tuple[str, dict[str, str]]]
) -> dict[str, str]:
    """Lower-case key → field name, built once per struct description. The descriptions are
    module constants; the cache holds them (so their ids stay theirs) and stays small."""
    key = (id(fields), id(nested) if nested else 0)
    cached = _CANONICAL.get(key)
    if cached is not None and cached[0] is fields and (not nested or cached[1] is nested):
        return cached[2]
    canonical = {name.lower(): name for name in (*fields, *nested)}
    if len(_CANONICAL) >= 64:
        _CANONICAL.clear()
    _CANONICAL[key] = (fields, nested if nested else None, canonical)
    return canonical


def decode_struct(
    value: Any, struct: str, fields: dict[str, str], nested: dict[str, tuple[str, dict[str, str]]]
) -> dict[str, Any]:
    """Check a decoded JSON value against a Go struct description.

    `fields` maps JSON key → Go kind; `nested` maps JSON key → (Go struct name, its fields).
    Returns the known keys (canonical spelling) that were present and not null.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type {struct}"
        )
    canonical = _canonical_keys(fields, nested)
    short = struct.split(".")[-1]
    out: dict[str, Any] = {}
    # Go prefers an exact key match, then a case-insensitive one; the last occurrence wins.
    for key, item in value.items():
        name = key if key in fields or key in nested else canonical.get(key.lower())
        if name is None:
            continue
        if name in nested:
            sub_struct, sub_fields = nested[name]
            checked = decode_struct(item, sub_struct, sub_fields, {})
            out[name] = checked
            continue
        kind = fields[name]
        item_type = type(item)  # the usual valid values without a call (as `_check` decides)
        if item_type is str and (kind == "string" or kind == "date"):
            out[name] = item
            continue
        if item_type is int and kind in _INT_RANGES:
            low, high = _INT_RANGES[kind]
            if low <= item <= high:
                out[name] = item
                continue
        checked_value = _check(item, kind, f"{short}.{name}")
        if checked_value is not None:
            out[name] = checked_value
    return out


_SPACE = re.compile("[ \t\r\n]*")
_WHITESPACE = " \t\r\n"
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
"""The decoder's C scanner: `(value, end)` of the JSON value at an index (what `raw_decode`
calls, without its wrapper: `raw_members` only reads bodies `read_one_value` accepted)."""


def raw_members(body: bytes) -> dict[str, str]:
    """Raw text of each member of a top-level JSON object (as Go `json.RawMessage` keeps it).

    Only called on bodies `read_one_value` accepted; returns {} when the value is no object.
    Invalid UTF-8 stays in the text as lone surrogates (surrogateescape): Go keeps the bytes of
    a RawMessage as they came, and `wire.marshal` writes them back.
    """
    text = body.decode("utf-8", "surrogateescape")
    index = len(text) - len(text.lstrip(" \t\r\n"))
    if not text.startswith("{", index):
        return {}
    members: dict[str, str] = {}
    index += 1
    scan, skip = _SCAN, _SPACE.match
    # Whitespace is skipped by the regular expression only where there is some (a compact
    # body, what Go and the agent send, has none): `text[i] in _WHITESPACE` costs less.
    while True:
        if text[index] in _WHITESPACE:
            index = skip(text, index).end()  # type: ignore[union-attr]  # `*` always matches
        if text[index] == "}":
            return members
        key, index = scan(text, index)
        if text[index] != ":":
            index = skip(text, index).end()  # type: ignore[union-attr]
        index += 1  # the ':'
        if text[index] in _WHITESPACE:
            index = skip(text, index).end()  # type: ignore[union-attr]
        start = index
        _, index = scan(text, start)
        members[str(key)] = text[start:index]
        if text[index] in _WHITESPACE:
            index = skip(text, index).end()  # type: ignore[union-attr]
        if text[index] == ",":
            index += 1


def sole_member_text(body: bytes, name: str) -> str | None:
    """The raw text of member `name` (any letter case) of the body's top-level object, when
    the body makes it plain: ASCII with no backslash anywhere (so every quote is structural:
    no key is escaped and no string holds a quote) and `"name"` in it once (so that token is
    the member's key, neither repeated nor nested nor a value elsewhere). Otherwise None, and
    `raw_members` decides. Only for bodies `read_one_value` accepted whose object has the
    member (as `decode_struct` matches keys); the usual result PUT body takes this path."""
    if not body.isascii() or b"\\" in body:
        return None
    token = f'"{name}"'.encode()
    lower = body.lower()
    at = lower.find(token)
    if at < 0 or lower.find(token, at + 1) >= 0:
        return None
    text = body.decode("ascii")
    index = _SPACE.match(text, at + len(token)).end()  # type: ignore[union-attr]
    if not text.startswith(":", index):
        return None
    start = _SPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    try:
        _, end = _SCAN(text, start)
    except (StopIteration, ValueError):
        return None
    return text[start:end]


_HTML_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


_COMPACT_CHANGES = re.compile("[ \t\r\n<>&\u2028\u2029]")
"""What `compact` may change: text without any of these comes out as it went in."""


def compact(raw: str) -> str:
    """Go's `compact` with HTML escaping, as `json.Marshal` applies it to a RawMessage:
    whitespace outside strings removed, `<>&` U+2028 U+2029 escaped, everything else verbatim.
    Text with none of those characters (what a Go encoder sends) is returned unscanned."""
    if _COMPACT_CHANGES.search(raw) is None:
        return raw
    return compact_scan(raw)


def compact_scan(raw: str) -> str:
    """`compact` character by character (what it does for text it may change)."""
    out: list[str] = []
    in_string = False
    escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            out.append(_HTML_ESCAPES.get(char, char))
        elif char == '"':
            in_string = True
            out.append(char)
        elif char not in " \t\r\n":
            out.append(_HTML_ESCAPES.get(char, char))
    return "".join(out)
