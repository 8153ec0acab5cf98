"""`json.loads`, faster: orjson (C) reads what it can, `json` the rest, with the same result.

The agent decodes JSON on every workload (poll pages, the reservation's own data, zone owners,
raw result data checked before it is embedded) and `json` was a tenth of its CPU at 50,000
workloads (benchmarks/agent). orjson is stricter than `json`, never more lenient: it refuses
invalid UTF-8, lone surrogate escapes (`"\\ud800"`), NaN and Infinity, numbers that overflow a
double and nesting deeper than 1024, all of which `json` reads (or refuses on its own terms);
anything orjson refuses is handed to `json` as before. Where both read a text they give equal
values, except integers outside [-2⁶³, 2⁶⁴), which orjson turns into floats: a text with a
run of 19 digits or more goes to `json` directly. A page of 200 poll items: `json` 2.5 ms,
this 1.1 ms (orjson 0.9, the digit check 0.26).

Decoding only: everything the agent writes goes through the Go-compatible encoders (`gojson`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; `json` decodes the same, slower
    orjson = None  # type: ignore[assignment]

__all__ = ["loads", "valid"]

_DIGIT_MAP: Final = bytes(0 if 0x30 <= b <= 0x39 else 1 for b in range(256))
"""Digits to 0, every other byte to 1: a run of 19 digits becomes 19 zero bytes, which
`bytes.find` spots at memory speed (a regular expression took longer than `json` itself)."""
_LONG_RUN: Final = bytes(19)


def _orjson_may_read(data: bytes | str) -> bool:
    if orjson is None:
        return False
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    return raw.translate(_DIGIT_MAP).find(_LONG_RUN) < 0


def loads(data: bytes | str, fallback: Callable[[Any], Any] = json.loads) -> Any:
    """`fallback(data)` (`json.loads` unless told): the same value, or the same exception
    class (ValueError, and RecursionError for nesting deeper than Python goes)."""
    if _orjson_may_read(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return fallback(data)


def valid(data: bytes | str) -> bool:
    """True when orjson reads `data` (then `json` does too); False means: ask `json`."""
    if orjson is None:
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
