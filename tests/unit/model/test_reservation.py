"""Reservation/Result: cache values (explorer spec §10), Go time format, result signature (§7)."""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.go_cache import GO_EXAMPLE
from tfgateway.model import gojson
from tfgateway.model.reservation import (
    CACHE_VERSION,
    MAX_DURATION_NS,
    ZERO_TIME,
    CacheDecodeError,
    GoTime,
    Reservation,
    Result,
    ResultState,
    decode_cache_value,
    encode_cache_value,
    format_go_time,
    parse_go_time,
    result_signing_bytes,
    sign_result,
)
from tfgateway.node.identity import Identity

HELLO = Identity(b"helloworldhelloworldhelloworld12")


def example_reservation() -> Reservation:
    data = {
        "domain": "app.gateway.example.com",
        "destination": ["185.69.166.1", "2a02:1802:5e::1"],
    }
    return Reservation(
        id="4521-1",
        node_id=HELLO.node_id,
        user_id="42",
        type="subdomain",
        data=gojson.marshal(data),
        created=GoTime.from_unix(1610000000),
        duration=MAX_DURATION_NS,
        signature=b"abcd01",
        to_delete=False,
        reference="",
        result=Result(
            type="subdomain",
            id="4521-1",
            created=GoTime(2021, 1, 7, 6, 13, 25, tzinfo=UTC, nanosecond=123456789),
            state=ResultState.OK,
            message="",
            data_json=b"",
            signature="420a",
        ),
        version=2,
    )


def test_agent_written_value_equals_go_example_byte_for_byte() -> None:
    assert encode_cache_value(example_reservation()) == GO_EXAMPLE


def test_go_written_value_loads_and_round_trips() -> None:
    r = decode_cache_value(GO_EXAMPLE)
    assert r.id == "4521-1"
    assert r.user_id == "42"
    assert r.type == "subdomain"
    assert r.signature == b"abcd01"
    assert r.duration == MAX_DURATION_NS
    assert r.created == datetime(2021, 1, 7, 6, 13, 20, tzinfo=UTC)
    assert isinstance(r.result.created, GoTime)
    assert r.result.created.nanosecond == 123456789
    assert r.result.state == ResultState.OK
    assert r.version == 2
    assert r.tag == {"source": "tfgateway_cache"}
    assert encode_cache_value(r) == GO_EXAMPLE
    assert r.result.data_json == b""
    assert r.data == example_reservation().data


def test_bare_json_and_old_versions_load_newer_do_not() -> None:
    bare = GO_EXAMPLE[len(b'"1.0.0"') :]
    assert decode_cache_value(bare).id == "4521-1"
    assert decode_cache_value(b'"0.9.0"' + bare).id == "4521-1"
    with pytest.raises(CacheDecodeError, match=r"unsupported cache value version 1\.0\.1"):
        decode_cache_value(b'"1.0.1"' + bare)


def test_empty_data_and_signature_are_omitted() -> None:
    r = Reservation(id="1-1", user_id="7", type="gateway4to6", created=GoTime.from_unix(0))
    out = encode_cache_value(r)
    assert b'"data"' not in out
    assert b'"signature":"' not in out.split(b'"result"')[0]
    assert out == (
        b'"1.0.0"{"id":"1-1","node_id":"","user_id":"7","type":"gateway4to6",'
        b'"created":"1970-01-01T00:00:00Z","duration":9223372036854775807,"to_delete":false,'
        b'"reference":"","result":{"type":"","id":"","created":"0001-01-01T00:00:00Z","state":0,'
        b'"message":"","data_json":null,"signature":""},"version":0}\n'
    )
    back = decode_cache_value(out)
    assert back == r
    assert encode_cache_value(back) == out


def test_go_style_case_insensitive_keys_and_nulls() -> None:
    value = b'{"ID":"x","User_Id":"5","type":"proxy","created":null,"result":null,"signature":null}'
    r = decode_cache_value(value)
    assert (r.id, r.user_id, r.created, r.result) == ("x", "5", ZERO_TIME, Result())


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage",
        b'"1.0.0"',
        b'"1.0.0"[]',
        b'"1.0.0"{"id":5}',
        b'"1.0.0"{"created":"yesterday"}',
        b'"1.0.0"{"duration":1.5}',
        b'"1.0.0"{"duration":"1"}',
        b'"1.0.0"{"duration":9223372036854775808}',
        b'"1.0.0"{"signature":"!!"}',
        b'"1.0.0"{"to_delete":"no"}',
        b'"1.0.0"{"result":[]}',
        b'"1.0.0"{"result":{"state":"ok"}}',
        b'"1.0.0"{"id":"x"}{"id":"y"}',
        b'"1.0.0"\xff\xfe',
    ],
)
def test_bad_cache_values_raise_cache_decode_error(value: bytes) -> None:
    with pytest.raises(CacheDecodeError):
        decode_cache_value(value)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(value: bytes) -> None:
    with contextlib.suppress(CacheDecodeError):
        decode_cache_value(value)


def _t(ns: int) -> GoTime:
    return GoTime(2021, 1, 7, 6, 13, 25, tzinfo=UTC, nanosecond=ns)


def _tz(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (
            GoTime(2021, 1, 7, 6, 13, 25, tzinfo=UTC, nanosecond=123456789),
            "2021-01-07T06:13:25.123456789Z",
        ),
        (
            GoTime(2021, 1, 7, 6, 13, 25, tzinfo=UTC, nanosecond=120000000),
            "2021-01-07T06:13:25.12Z",
        ),
        (GoTime(2021, 1, 7, 6, 13, 25, tzinfo=UTC, nanosecond=1), "2021-01-07T06:13:25.000000001Z"),
        (datetime(2021, 1, 7, 6, 13, 25, 500000, tzinfo=UTC), "2021-01-07T06:13:25.5Z"),
        (datetime(2021, 1, 7, 6, 13, 25), "2021-01-07T06:13:25Z"),
        (
            datetime(2021, 1, 7, 6, 13, 25, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2021-01-07T06:13:25+05:30",
        ),
        (
            datetime(2021, 1, 7, 6, 13, 25, tzinfo=timezone(-timedelta(hours=3))),
            "2021-01-07T06:13:25-03:00",
        ),
        (datetime(2021, 1, 7, tzinfo=timezone(timedelta(0))), "2021-01-07T00:00:00Z"),
        (ZERO_TIME, "0001-01-01T00:00:00Z"),
        (GoTime.from_unix(1610000000), "2021-01-07T06:13:20Z"),
    ],
)
def test_go_time_format(t: datetime, text: str) -> None:
    assert format_go_time(t) == text


def test_go_time_parse() -> None:
    t = parse_go_time("2021-01-07T06:13:25.1+05:30")
    assert format_go_time(t) == "2021-01-07T06:13:25.1+05:30"
    assert t == datetime(2021, 1, 7, 0, 43, 25, 100000, tzinfo=UTC)
    assert format_go_time(parse_go_time("2021-01-07T06:13:25-00:00")) == "2021-01-07T06:13:25Z"
    assert parse_go_time("2021-01-07T06:13:25.1234567891Z").nanosecond == 123456789
    for bad in ["2021-01-07", "2021-13-07T06:13:25Z", "2021-01-07T06:13:25+25:00", "x"]:
        with pytest.raises(ValueError, match="time"):
            parse_go_time(bad)


def test_gotime_survives_copy_and_arithmetic() -> None:
    t = GoTime(2021, 1, 7, tzinfo=UTC, nanosecond=999)
    assert copy.deepcopy(t).nanosecond == 999
    assert format_go_time(t + timedelta(seconds=1)) == "2021-01-07T00:00:01Z"


@given(st.integers(min_value=0, max_value=253402300799), st.integers(0, 999_999_999))
def test_go_time_round_trip(seconds: int, ns: int) -> None:
    t = GoTime.from_unix(seconds, ns)
    assert parse_go_time(format_go_time(t)).nanosecond == ns
    assert format_go_time(parse_go_time(format_go_time(t))) == format_go_time(t)


def test_expiry_like_go() -> None:
    r = Reservation(id="1", user_id="1", type="proxy", created=GoTime.from_unix(1610000000))
    end = r.expires_at()
    assert end is not None
    assert end.isoformat().startswith("2313-04-19T06:00:36.854775")
    assert not r.expired()
    short = Reservation(
        id="1", user_id="1", type="proxy", created=GoTime.from_unix(0), duration=10**9
    )
    assert short.expired()
    assert not short.expired(datetime(1970, 1, 1, 0, 0, 1))


SIGNATURE_VECTORS = [
    (
        HELLO,
        ResultState.OK,
        "",
        b"null",
        "420a7b1afdcda375e65a8cadd643d7ef99fd774159417e2bdc37ad1c9fb69689"
        "1c4af07efc6dc73749e1cc928c08cc379841c1d832da99383dcf7ba5e888100b",
    ),
    (
        HELLO,
        ResultState.ERROR,
        "failed to decrypt secret: decryption error",
        b"null",
        "0cf1d50243654291b02f7a8147ae1489ca4c2bb33f4b61a26bc2ecffb8d5d67b"
        "5b8406dc11021ce58b1a7c0adf7ec37cdbfb289147dc3ea3a7c92a27788dea04",
    ),
]


@pytest.mark.parametrize(("ident", "state", "message", "data", "sig"), SIGNATURE_VECTORS)
def test_result_signature_vectors(
    ident: Identity, state: ResultState, message: str, data: bytes, sig: str
) -> None:
    result = Result(type="proxy", id="4521-1", state=state, message=message, data_json=data)
    signed = sign_result(result, ident)
    assert signed.signature == sig
    assert signed.data_json == data
    # empty data is signed as null, like the Go engine's json.Marshal(nil)
    assert sign_result(Result(state=state, message=message), ident).signature == sig


def test_result_signing_bytes_vector() -> None:
    assert result_signing_bytes(Result(state=ResultState.OK)).hex() == "016e756c6c"
    with pytest.raises(ValueError, match="one byte"):
        result_signing_bytes(Result(state=256))


def test_result_signature_4to6_vector() -> None:
    """Spec §7 third vector: seed 32 times 'a', the §11 4to6 result data (built by fourtosix)."""
    ident = Identity(b"a" * 32)
    data = gojson.marshal(
        {
            "ips": ["fd5e:ca9b:d3eb:7c0:2ffd:7e52:ea26:4419"],
            "peers": [
                {
                    "public_key": "QElQLbksojQsP5LaxdbefIXbXfVAeltJls458u+36Cc=",
                    "endpoint": "gw.example.com:51820",
                    "allowed_ips": ["::/0"],
                }
            ],
        }
    )
    signed = sign_result(Result(state=ResultState.OK, data_json=data), ident)
    assert signed.signature == (
        "bc51f8c190bd0795a83dc8836a09af9017bba7c40770e58af4c0770e29bbd1c5"
        "b12903a39df65839d3edcb066004a4f444707f4032f961ac6a5d5f909f26fb03"
    )


# Produced by Go 1.26 encoding/json from structs with ZOS's json tags (HTML escaping, a
# +05:30 zone, 1 ns, []byte signature, RawMessage compacted, non-ASCII kept raw).
GO_HOSTILE = (
    '{"id":"ref\\u003c\\u0026\\u003e","node_id":"n","user_id":"7","type":"reverse_proxy",'
    '"data":{"domain":"a.example.com","secret":"\\u003cx\\u003e\\u2028"},'
    '"created":"2021-01-07T11:43:20.12+05:30","duration":1500000000,"signature":"AP8B",'
    '"to_delete":true,"reference":"é日本","result":{"type":"proxy","id":"1-1",'
    '"created":"1970-01-01T00:00:00.000000001Z","state":2,"message":"bad \\"x\\"\\n",'
    '"data_json":[1.50,2],"signature":"ab"},"version":3}\n'
).encode()


def test_unusual_values_encode_like_go() -> None:
    created = GoTime.from_unix(1610000000, 120000000).astimezone(_tz(330))
    r = Reservation(
        id="ref<&>",
        node_id="n",
        user_id="7",
        type="reverse_proxy",
        data=b'{"domain": "a.example.com", "secret": "<x>\\u2028"}',
        created=created,
        duration=1_500_000_000,
        signature=bytes([0, 255, 1]),
        to_delete=True,
        reference="é日本",
        result=Result(
            type="proxy",
            id="1-1",
            created=GoTime.from_unix(0, 1),
            state=ResultState.DELETED,
            message='bad "x"\n',
            data_json=b"[1.50, 2]",
            signature="ab",
        ),
        version=3,
    )
    assert encode_cache_value(r) == b'"1.0.0"' + GO_HOSTILE
    back = decode_cache_value(GO_HOSTILE)
    assert encode_cache_value(back) == b'"1.0.0"' + GO_HOSTILE
    assert back.created == created
    assert back.signature == bytes([0, 255, 1])


_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _TEXT,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_TEXT, c, max_size=3),
    max_leaves=8,
)
_TIMES = st.builds(
    GoTime.from_unix, st.integers(0, 253402300799 - 86400), st.integers(0, 999_999_999)
)


@given(
    rid=_TEXT,
    user=_TEXT,
    data=st.one_of(st.just(b""), _JSON.map(gojson.marshal)),
    created=_TIMES,
    duration=st.integers(-(2**63), 2**63 - 1),
    signature=st.binary(max_size=40),
    result_data=st.one_of(st.just(b""), _JSON.map(gojson.marshal)),
    result_created=_TIMES,
    state=st.sampled_from(list(ResultState)),
    message=_TEXT,
    version=st.integers(0, 2**31),
)
def test_cache_codec_round_trips(
    rid: str,
    user: str,
    data: bytes,
    created: GoTime,
    duration: int,
    signature: bytes,
    result_data: bytes,
    result_created: GoTime,
    state: ResultState,
    message: str,
    version: int,
) -> None:
    r = Reservation(
        id=rid,
        user_id=user,
        type="proxy",
        data=data,
        created=created,
        duration=duration,
        signature=signature,
        result=Result(
            type="proxy",
            id=rid,
            created=result_created,
            state=state,
            message=message,
            data_json=b"" if result_data == b"null" else result_data,
        ),
        version=version,
    )
    value = encode_cache_value(r)
    # written field by field: the bytes of the general encoder on the Go struct's fields
    assert value == CACHE_VERSION + gojson.encode(r.to_go())
    assert r.with_result(r.result) == r
    back = decode_cache_value(value)
    assert encode_cache_value(back) == value
    assert back.id == rid
    assert back.signature == signature
    assert back.duration == duration
