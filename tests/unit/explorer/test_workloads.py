"""Workload → Reservation conversion (spec §5) and the wire result (spec §7)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfgateway.explorer.models import TYPE_CODES, ProxyWorkload, SubdomainWorkload, WorkloadError
from tfgateway.explorer.workloads import (
    go_ip_string,
    job_from_item,
    rank,
    reservation_data,
    wire_result,
)
from tfgateway.model import gojson
from tfgateway.model.reservation import (
    MAX_DURATION_NS,
    GoTime,
    Result,
    encode_cache_value,
    parse_go_time,
    sign_result,
)
from tfgateway.node.identity import Identity

SEED = b"helloworldhelloworldhelloworld12"
NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"


def item(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload_id": 1,
        "node_id": NODE,
        "reference": "",
        "id": 4521,
        "customer_tid": 42,
        "customer_signature": "abcd01",
        "next_action": 3,
        "epoch": 1610000000,
        "result": {"category": 0, "workload_id": "", "data_json": None, "state": 0, "epoch": 0},
        "workload_type": 7,
        "version": 2,
        "domain": "app.gateway.example.com",
        "ips": ["185.69.166.1", "2a02:1802:005e:0000::1"],
    }
    base.update(kw)
    return base


def test_subdomain_matches_spec_cache_example_byte_for_byte() -> None:
    job = job_from_item(item())
    result = Result(
        type="subdomain",
        id="4521-1",
        created=parse_go_time("2021-01-07T06:13:25.123456789Z"),
        state=1,
        signature="420a",
    )
    value = encode_cache_value(replace(job.reservation, result=result))
    assert value == (
        b'"1.0.0"{"id":"4521-1","node_id":"FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85",'
        b'"user_id":"42","type":"subdomain","data":{"domain":"app.gateway.example.com",'
        b'"destination":["185.69.166.1","2a02:1802:5e::1"]},"created":"2021-01-07T06:13:20Z",'
        b'"duration":9223372036854775807,"signature":"YWJjZDAx","to_delete":false,'
        b'"reference":"","result":{"type":"subdomain","id":"4521-1",'
        b'"created":"2021-01-07T06:13:25.123456789Z","state":1,"message":"","data_json":null,'
        b'"signature":"420a"},"version":2}\n'
    )
    assert job.reservation.duration == MAX_DURATION_NS
    assert (job.real_id, job.key, job.category) == ("4521-1", "4521-1", 7)


@pytest.mark.parametrize(
    ("override", "data"),
    [
        (
            {"workload_type": 5, "addr": "1.2.3.4", "port": 80, "port_tls": 443},
            b'{"domain":"app.gateway.example.com","addr":"1.2.3.4","port":80,"port_tls":443}',
        ),
        (
            {"workload_type": 6, "secret": "abcd"},
            b'{"domain":"app.gateway.example.com","secret":"abcd"}',
        ),
        ({"workload_type": 8}, b'{"domain":"app.gateway.example.com"}'),
        ({"workload_type": 9, "public_key": "k<&>"}, b'{"public_key":"k\\u003c\\u0026\\u003e"}'),
        ({"workload_type": 1}, b""),
    ],
)
def test_data_per_type_in_gateway_key_order(override: dict[str, Any], data: bytes) -> None:
    job = job_from_item(item(**override))
    assert job.reservation.data == data


def test_type_names_and_node_id() -> None:
    assert job_from_item(item(workload_type=8)).reservation.type == "domain_delegate"
    container = job_from_item(item(workload_type=1)).reservation
    assert (container.type, container.node_id) == ("container", "")
    assert job_from_item(item(workload_type=77)).reservation.type == "UNKNOWN"


def test_reference_is_cache_key_but_results_go_to_real_id() -> None:
    job = job_from_item(item(reference="100-1"))
    assert (job.key, job.real_id, job.reservation.reference) == ("100-1", "4521-1", "100-1")


def test_hostile_reference_is_an_error_result() -> None:
    with pytest.raises(WorkloadError, match="invalid reference") as info:
        job_from_item(item(reference="../../gateways"))
    assert info.value.real_id == "4521-1"


def test_delete_flag_only_for_next_action_4() -> None:
    assert job_from_item(item(next_action=4)).reservation.to_delete
    assert not job_from_item(item(next_action=6)).reservation.to_delete


def test_epoch_out_of_range_is_an_error() -> None:
    with pytest.raises(WorkloadError, match="epoch"):
        job_from_item(item(epoch=2**62))


@pytest.mark.parametrize(
    ("given", "printed"),
    [
        ("185.69.166.1", "185.69.166.1"),
        ("2A02:1802:005E::0001", "2a02:1802:5e::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::1.2.3.4", "::102:304"),
        ("fe80::1%eth0", ""),
        ("not an ip", ""),
        ("", ""),
    ],
)
def test_go_parse_ip_reprint(given: str, printed: str) -> None:
    assert go_ip_string(given) == printed


def test_rank_orders_types() -> None:
    jobs = [job_from_item(item(workload_type=t)) for t in (9, 6, 5, 7, 8, 1)]
    assert [j.reservation.type for j in sorted(jobs, key=rank)] == [
        "domain_delegate",
        "container",
        "subdomain",
        "proxy",
        "reverse_proxy",
        "gateway4to6",
    ]


def test_wire_result_matches_spec_put_body() -> None:
    result = sign_result(
        Result(
            type="subdomain",
            id="4521-1",
            created=parse_go_time("2021-01-07T06:13:25Z"),
            state=1,
        ),
        Identity(SEED),
    )
    assert wire_result(result, 7) == (
        b'{"category":7,"workload_id":"4521-1","data_json":null,"signature":"420a7b1afdcda375e65a'
        b"8cadd643d7ef99fd774159417e2bdc37ad1c9fb696891c4af07efc6dc73749e1cc928c08cc379841c1d8"
        b'32da99383dcf7ba5e888100b","state":1,"message":"","epoch":1610000005,"node_id":""}\n'
    )


@pytest.mark.parametrize("tid", [0, -1])
def test_user_zero_is_the_operator_never_an_explorer_user(tid: int) -> None:
    """User 0 owns the operator's workloads file (docs/workloads.md): an explorer workload with
    customer_tid 0 (or less) would share its names, so it gets an error result instead."""
    with pytest.raises(WorkloadError, match="must be a positive user id"):
        job_from_item(item(customer_tid=tid))


_TEXT = st.text(max_size=20)  # lone surrogates included: Go writes U+FFFD for them
_RAW = st.one_of(
    st.sampled_from([b"", b"null", b'{"a": [1, 2.50]}', b'"<&>\xe2\x80\xa8"', b'"\xff"']),
    st.recursive(
        st.none() | st.booleans() | st.integers() | _TEXT,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(_TEXT, c, max_size=3),
        max_leaves=6,
    ).map(gojson.marshal),
)


@given(
    rtype=st.sampled_from(["proxy", "subdomain", "UNKNOWN", "other"]),
    rid=_TEXT,
    seconds=st.integers(-62135596800, 253402300799),
    state=st.integers(0, 255),
    message=_TEXT,
    data=_RAW,
    signature=_TEXT,
    category=st.one_of(st.none(), st.integers(0, 255)),
)
def test_wire_result_is_the_general_encoders_bytes(
    rtype: str, rid: str, seconds: int, state: int, message: str, data: bytes, signature: str,
    category: int | None,
) -> None:  # fmt: skip
    """`wire_result` writes its fields itself: the bytes of `gojson.encode` on the Go struct."""
    result = Result(rtype, rid, GoTime.from_unix(seconds), state, message, data, signature)
    created = result.created
    expected = gojson.encode(
        {
            "category": TYPE_CODES.get(rtype, 0) if category is None else category,
            "workload_id": rid,
            "data_json": gojson.RawJSON(data),
            "signature": signature,
            "state": state,
            "message": message,
            "epoch": int(created.timestamp()) if created.year > 1 else 0,
            "node_id": "",
        }
    )
    assert wire_result(result, category) == expected


@given(
    domain=_TEXT,
    addr=_TEXT,
    port=st.integers(0, 0xFFFFFFFF),
    port_tls=st.integers(0, 0xFFFFFFFF),
    ips=st.lists(st.sampled_from(["185.69.166.1", "::ffff:1.2.3.4", "2a02::1", "x", ""]) | _TEXT),
)
def test_reservation_data_is_the_general_encoders_bytes(
    domain: str, addr: str, port: int, port_tls: int, ips: list[str]
) -> None:
    """Proxies and subdomains have their data written field by field: `gojson.marshal`'s bytes."""
    proxy = ProxyWorkload(domain=domain, addr=addr, port=port, port_tls=port_tls)
    assert reservation_data(proxy) == gojson.marshal(
        {"domain": domain, "addr": addr, "port": port, "port_tls": port_tls}
    )
    sub = SubdomainWorkload(domain=domain, ips=ips)
    assert reservation_data(sub) == gojson.marshal(
        {"domain": domain, "destination": [go_ip_string(ip) for ip in ips]}
    )
