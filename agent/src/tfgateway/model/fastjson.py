"""`json.loads`, faster: orjson (C) reads what it can, `json` the rest, with the same result.

The agent decodes JSON on every workload (poll pages, the reservation's own data, zone owners,
raw result data checked before it is embedded) and `json` was a tenth of its CPU at 50,000
workloads (benchmarks/agent). orjson is stricter than `json`, never more lenient: it refuses
invalid UTF-8, lone surrogate escapes (`"\\ud800"`), NaN and Infinity, numbers that overflow a
double and nesting deeper than 1024, all of which `json` reads (or refuses on its own terms);
anything orjson refuses is handed to `json` as before. Where both read a text they give equal
values, except integers outside [-2⁶³, 2⁶⁴), which orjson turns into floats: a text with a
run of 19 digits or more goes to `json` directly.

Decoding only: everything the agent writes goes through the Go-compatible encoders (`gojson`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; `json` decodes the same, slower
    orjson = None  # type: ignore[assignment]

__all__ = ["loads", "valid"]

_LONG_DIGITS: Final = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_TEXT: Final = re.compile(r"[0-9]{19}")


def _orjson_may_read(data: bytes | str) -> bool:
    if orjson is None:
        return False
    pattern = _LONG_DIGITS if isinstance(data, bytes) else _LONG_DIGITS_TEXT
    return pattern.search(data) is None  # type: ignore[arg-type]


def loads(data: bytes | str) -> Any:
    """`json.loads(data)`: the same value, or the same exception class (ValueError, and
    RecursionError for nesting deeper than Python goes)."""
    if _orjson_may_read(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def valid(data: bytes | str) -> bool:
    """True when orjson reads `data` (then `json` does too); False means: ask `json`."""
    if orjson is None:
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
