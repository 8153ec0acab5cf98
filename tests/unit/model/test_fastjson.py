"""fastjson.loads is json.loads: the same value or the same kind of refusal, whichever of
orjson and json reads the text; `valid` never says yes to a text json refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgateway.model import fastjson


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (1 and 1.0 differ; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _outcome(read: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "value", read(data)
    except RecursionError:
        return "error", RecursionError
    except ValueError:
        return "error", ValueError


TRICKY = [
    b"[18446744073709551615]",  # u64 max: an int for both
    b"[18446744073709551616]",  # beyond: orjson gives a float, json an int
    b"[-9223372036854775809]",  # below i64 min: the same
    b"[9223372036854775807, -9223372036854775808]",
    b'{"a":1,"a":2}',
    b"[-0, -0.0, 0.1, 1e2, 1E-2, 1.0, 5e-324, 1.7976931348623157e308]",
    b"[1e400]",  # json: inf; orjson refuses
    b"[-1e400]",
    b"[NaN, Infinity, -Infinity]",
    b'["\\ud800", "\\udc00x", "\\ud83d\\ude00"]',  # lone surrogates: json only
    b'["\\u0000", "\\/", "\\"", "\\u2028"]',
    b"\xef\xbb\xbf[1]",  # byte order mark: json.loads(bytes) drops it
    b'["\xff"]',  # invalid UTF-8
    b"[1]x",
    b" [1] ",
    b"",
    b"nul",
    b"[" * 2000 + b"]" * 2000,  # deeper than orjson's 1024
    b'{"port": 1234567890123456789012}',
    '["\udcff"]',  # a str with a lone surrogate (surrogateescape of a bad byte)
    '{"domain": "a.example", "destination": ["10.0.0.1"]}',
]


@pytest.mark.parametrize("data", TRICKY, ids=range(len(TRICKY)))
def test_tricky_texts_read_as_json_reads_them(data: bytes | str) -> None:
    kind, value = _outcome(json.loads, data)
    got_kind, got = _outcome(fastjson.loads, data)
    assert got_kind == kind, data[:40]
    assert _same(got, value) if kind == "value" else got is value


@pytest.mark.parametrize("data", TRICKY, ids=range(len(TRICKY)))
def test_valid_only_for_texts_json_reads(data: bytes | str) -> None:
    if fastjson.valid(data):
        json.loads(data)  # must not raise


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_any_json_text_reads_the_same(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        for data in (text, text.encode("utf-8", "surrogatepass")):
            kind, expected = _outcome(json.loads, data)
            got_kind, got = _outcome(fastjson.loads, data)
            assert got_kind == kind
            assert _same(got, expected) if kind == "value" else got is expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_read_the_same(data: bytes) -> None:
    kind, expected = _outcome(json.loads, data)
    got_kind, got = _outcome(fastjson.loads, data)
    assert got_kind == kind
    assert _same(got, expected) if kind == "value" else got is expected


def _replacing(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "replace"))


@pytest.mark.parametrize("data", [d for d in TRICKY if isinstance(d, bytes)])
def test_with_a_fallback_of_its_own(data: bytes) -> None:
    """The poll page's reading (explorer client): invalid UTF-8 replaced, not refused."""
    kind, value = _outcome(_replacing, data)
    got_kind, got = _outcome(lambda d: fastjson.loads(d, _replacing), data)
    assert got_kind == kind
    assert _same(got, value) if kind == "value" else got is value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | _json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_with_a_fallback_of_its_own(data: bytes) -> None:
    kind, expected = _outcome(_replacing, data)
    got_kind, got = _outcome(lambda d: fastjson.loads(d, _replacing), data)
    assert got_kind == kind
    assert _same(got, expected) if kind == "value" else got is expected
