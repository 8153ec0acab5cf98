"""Go-compatible JSON output for the development explorer.

The real explorer answers through Go's `json.Encoder`: compact, struct field order, `<>&` and
U+2028/U+2029 escaped, a trailing newline. Clients (the agent, the Go daemon) must see the same
bytes from this server, so every body goes through `encode` here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_GO_ESCAPES = {
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
        return "0"
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


def _escape_string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if any(ch in text for ch in _GO_ESCAPES):
        for raw, escaped in _GO_ESCAPES.items():
            text = text.replace(raw, escaped)
    return text


def _emit(value: Any, out: list[str]) -> None:
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


def marshal(value: Any) -> bytes:
    """Compact Go-style JSON (`json.Marshal`)."""
    out: list[str] = []
    _emit(value, out)
    return "".join(out).encode()


def encode(value: Any) -> bytes:
    """Go `json.Encoder` output: `marshal` plus a newline, as every explorer body."""
    return marshal(value) + b"\n"
