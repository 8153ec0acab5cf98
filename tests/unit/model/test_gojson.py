"""gojson writes what Go's encoding/json writes (vectors produced with Go 1.26, see comments)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfgateway.model.gojson import (
    GoJSONError,
    Number,
    RawJSON,
    compact,
    encode,
    format_float,
    loads_preserving_numbers,
    marshal,
    parse_semver,
    split_versioned,
)

# (value, bytes json.Marshal gave in Go)
FLOATS = [
    (0.0, "0"),
    (51.0, "51"),
    (51.05, "51.05"),
    (1e-7, "1e-7"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (1.5e-7, "1.5e-7"),
    (123456789.125, "123456789.125"),
    (1e-6, "0.000001"),
    (9.999e-7, "9.999e-7"),
    (0.1, "0.1"),
    (1.0 / 3, "0.3333333333333333"),
    (2.5e300, "2.5e+300"),
    (-1e-300, "-1e-300"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (100.0, "100"),
    (12345678901234567890.0, "12345678901234567000"),
    (0.000001234, "0.000001234"),
    (1e22, "1e+22"),
    (3e-10, "3e-10"),
    (-0.0, "-0"),
]


@pytest.mark.parametrize(("value", "expected"), FLOATS)
def test_float_format_matches_go(value: float, expected: str) -> None:
    assert format_float(value) == expected
    assert marshal(value) == expected.encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_unsupported_floats_are_refused(value: float) -> None:
    with pytest.raises(GoJSONError, match="unsupported value"):
        marshal(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_format_round_trips(value: float) -> None:
    text = format_float(value)
    assert float(text) == value
    assert not text.endswith(".0")
    assert "e-0" not in text


def test_string_escaping_matches_go() -> None:
    value = '<a&b>\u2028\u2029\x00\x01\x08\x0c\n\r\t"\\é日本\U0001f600\x7f'
    expected = (
        '"\\u003ca\\u0026b\\u003e\\u2028\\u2029\\u0000\\u0001\\u0008\\u000c\\n\\r\\t\\"\\\\'
        'é日本\U0001f600\x7f"'
    ).encode()
    assert marshal(value) == expected
    assert json.loads(marshal(value)) == value


def test_lone_surrogate_becomes_replacement_like_invalid_utf8_in_go() -> None:
    assert marshal("a\udcffb") == b'"a\\ufffdb"'


def test_dict_order_kept_bytes_as_base64() -> None:
    assert marshal({"b": 1, "a": b"abcd01"}) == b'{"b":1,"a":"YWJjZDAx"}'


def test_raw_json_is_compacted_and_escaped_like_go() -> None:
    raw = RawJSON(' { "a" : [1, 2.50, "<x>\u2028" ] } '.encode())
    assert marshal(raw) == b'{"a":[1,2.50,"\\u003cx\\u003e\\u2028"]}'
    assert marshal(RawJSON(b"")) == b"null"
    assert marshal(RawJSON(None)) == b"null"


@pytest.mark.parametrize("bad", [b"{", b"[1,]", b"NaN", b"1 2", b"\xff"])
def test_invalid_raw_json_is_refused(bad: bytes) -> None:
    with pytest.raises(GoJSONError):
        marshal(RawJSON(bad))


def test_compact_keeps_escapes_inside_strings() -> None:
    assert compact(b'{"a" : "x \\" y"}') == b'{"a":"x \\" y"}'


def test_encoder_adds_newline_and_misc_values() -> None:
    assert encode([]) == b"[]\n"
    assert marshal(None) == b"null"
    assert marshal([True, False, -5, 2**63 - 1]) == b"[true,false,-5,9223372036854775807]"
    assert marshal(Number("2.50")) == b"2.50"


def test_non_string_keys_and_unknown_types_are_refused() -> None:
    with pytest.raises(GoJSONError):
        marshal({1: 2})
    with pytest.raises(GoJSONError):
        marshal(object())


def test_loads_preserving_numbers_round_trips_go_bytes() -> None:
    raw = b'{"z":1,"a":[2.50,1e-7,"\\u003c"],"n":null}'
    assert marshal(loads_preserving_numbers(raw)) == raw


_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | _TEXT,
        lambda children: st.lists(children) | st.dictionaries(_TEXT, children),
        max_leaves=20,
    )
)
def test_marshal_is_valid_json_with_same_value(value: object) -> None:
    out = marshal(value)
    assert json.loads(out) == value
    assert marshal(json.loads(out)) == out
    assert not set(out) & set(b"<>&")


def test_semver_and_versioned_split() -> None:
    assert parse_semver("1.0.0") == (1, 0, 0, "")
    assert parse_semver("1.1.0-rc.1+b") == (1, 1, 0, "rc.1")
    assert parse_semver("01.0.0") is None
    assert parse_semver("1.0") is None
    assert split_versioned(b'"1.0.0"abc') == ((1, 0, 0, ""), b"abc")
    assert split_versioned(b'  "1.1.0" {"a":1}') == ((1, 1, 0, ""), b' {"a":1}')
    assert split_versioned(b'{"id":1}') == (None, b'{"id":1}')
    assert split_versioned(b'"not a version"x') == (None, b'"not a version"x')
    assert split_versioned(b'"unterminated') == (None, b'"unterminated')
    assert split_versioned(b"") == (None, b"")
