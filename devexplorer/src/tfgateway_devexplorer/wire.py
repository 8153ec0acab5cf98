"""Go-compatible JSON output for the development explorer.

The real explorer answers through Go's `json.Encoder`: compact, struct field order, `<>&` and
U+2028/U+2029 escaped, a trailing newline. Clients (the agent, the Go daemon) must see the same
bytes from this server, so every body goes through `encode` here.

Target: Go before 1.22, the Go of the real explorer's binaries (built with Go 1.14, like the
daemon's): U+0008 and U+000C are `\\u0008`/`\\u000c` (Go 1.22 made them `\\b`/`\\f`), a lone
surrogate (an invalid byte decoded with `surrogateescape`) is `\\ufffd` as Go writes each
invalid byte, `bytes` are base64 (Go `[]byte`), and invalid bytes inside a `RawJSON` (kept by
the decoder as lone surrogates) are written back as the bytes they were, as Go copies a
RawMessage. Held to tests/vectors/gojson/go1.15.15.json, the vectors the agent's encoder is
held to; this encoder is written separately on purpose (an independent implementation of the
other side of the protocol, kept apart from the agent by an import contract).
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

# What `encode_basestring` (Python's JSON string escaping) writes unlike Go: found in the input,
# then fixed in its output, where every backslash starts an escape, so a left-to-right scan that
# takes `\\` whole meets `\b` and `\f` only where they are escapes.
_NOT_AS_GO = re.compile("[\x08\x0c<>&\u2028\u2029\ud800-\udfff]")
_FIX_RE = re.compile(r"\\[\\bf]|[<>&\u2028\u2029\ud800-\udfff]")
_GO_ESCAPES = {
    "\\\\": "\\\\",
    "\\b": "\\u0008",
    "\\f": "\\u000c",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


@dataclass(frozen=True)
class RawJSON:
    """Already-encoded JSON embedded verbatim (Go `json.RawMessage`)."""

    text: str


def _go_float(value: float) -> str:
    """Format a float64 the way Go's encoding/json does (shortest digits, no `.0`)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"unsupported float value {value!r}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"  # Go keeps the sign of -0
    shortest = repr(value)  # shortest round-trip digits
    absolute = abs(value)
    if absolute < 1e-6 or absolute >= 1e21:
        mantissa, _, exponent = shortest.partition("e")
        mantissa = mantissa.removesuffix(".0")
        sign = exponent[0]
        digits = exponent[1:].lstrip("0") or "0"
        if sign == "+" and len(digits) < 2:
            digits = "0" + digits
        return f"{mantissa}e{sign}{digits}"
    return format(Decimal(shortest), "f").removesuffix(".0")


def _go_escape(match: re.Match[str]) -> str:
    return _GO_ESCAPES.get(match.group(), "\\ufffd")  # the rest: lone surrogates


def _escape_string(value: str) -> str:
    # `json.dumps(value, ensure_ascii=False)` without building an encoder per call
    text: str = encode_basestring(value)
    if _NOT_AS_GO.search(value) is not None:
        text = _FIX_RE.sub(_go_escape, text)
    return text


def _emit(value: Any, out: list[str]) -> None:
    # Exact types first (nearly every value), then the general rules for subclasses and
    # the rest; both give the same bytes.
    kind = type(value)
    if kind is str:
        out.append(_escape_string(value))
        return
    if kind is int:
        out.append(int.__repr__(value))
        return
    if kind is dict:
        if not value:
            out.append("{}")
            return
        sep = "{"
        for key, item in value.items():
            out.append(sep)
            out.append(_escape_string(key if type(key) is str else str(key)))
            out.append(":")
            _emit(item, out)
            sep = ","
        out.append("}")
        return
    if kind is list:
        if not value:
            out.append("[]")
            return
        sep = "["
        for item in value:
            out.append(sep)
            _emit(item, out)
            sep = ","
        out.append("]")
        return
    if kind is RawJSON:
        out.append(value.text)
        return
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, RawJSON):
        out.append(value.text)
    elif isinstance(value, str):
        out.append(_escape_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, bytes | bytearray):
        out.append('"' + base64.b64encode(value).decode("ascii") + '"')
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_escape_string(str(key)))
            out.append(":")
            _emit(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _emit(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_GO_STRINGS: dict[str, str] = {}
"""Encodings of recent short strings: a workload's node id, its empty strings and its type's
key names come again in every workload of a run."""


def go_string(value: str) -> str:
    """One string as Go's encoder writes it (quoted, escaped, `<>&` U+2028 U+2029 as \\u)."""
    text = _GO_STRINGS.get(value)
    if text is None:
        text = _escape_string(value)
        if len(value) <= 128:
            if len(_GO_STRINGS) >= 4096:
                _GO_STRINGS.clear()
            _GO_STRINGS[value] = text
    return text


def marshal_text(value: Any) -> str:
    """`marshal` as text."""
    out: list[str] = []
    _emit(value, out)
    return "".join(out)


def marshal(value: Any) -> bytes:
    """Compact Go-style JSON (`json.Marshal`)."""
    # Lone surrogates left in the text are invalid bytes of a RawJSON: their bytes again.
    return marshal_text(value).encode("utf-8", "surrogateescape")


def encode(value: Any) -> bytes:
    """Go `json.Encoder` output: `marshal` plus a newline, as every explorer body."""
    return marshal(value) + b"\n"
