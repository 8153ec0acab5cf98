"""Poll items → typed models: tolerant of unknown keys, strict on types, never a batch failure."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgateway.explorer.models import (
    ProxyWorkload,
    SubdomainWorkload,
    WorkloadBase,
    WorkloadError,
    parse_workload,
    scrub,
)
from tfgateway.explorer.workloads import job_from_item


def item(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload_id": 1,
        "node_id": "N",
        "pool_id": 7,
        "reference": "",
        "id": 4521,
        "json": "",
        "customer_tid": 42,
        "customer_signature": "abcd01",
        "next_action": 3,
        "signing_request_provision": {"signers": [], "quorum_min": 0},
        "signatures_provision": [],
        "epoch": 1610000000,
        "result": {
            "category": 0,
            "workload_id": "",
            "data_json": None,
            "signature": "",
            "state": 0,
            "message": "",
            "epoch": 0,
            "node_id": "",
        },
        "workload_type": 7,
        "version": 2,
        "domain": "app.gateway.example.com",
        "ips": ["185.69.166.1"],
    }
    base.update(kw)
    return base


def test_subdomain_parses_with_unknown_keys() -> None:
    w = parse_workload(item(brand_new_field={"x": 1}))
    assert isinstance(w, SubdomainWorkload)
    assert (w.real_id, w.type_name, w.ips) == ("4521-1", "subdomain", ["185.69.166.1"])


def test_null_leaves_zero_value_like_go() -> None:
    w = parse_workload(item(domain=None, ips=None, result=None))
    assert isinstance(w, SubdomainWorkload)
    assert (w.domain, w.ips, w.result.state) == ("", [], 0)


def test_proxy_fields() -> None:
    w = parse_workload(item(workload_type=5, addr="1.2.3.4", port=80, port_tls=443))
    assert isinstance(w, ProxyWorkload)
    assert (w.addr, w.port, w.port_tls) == ("1.2.3.4", 80, 443)


def test_empty_string_epoch_is_zero_time() -> None:
    assert parse_workload(item(epoch="")).epoch == 0


def test_unknown_type_parses_as_base() -> None:
    w = parse_workload(item(workload_type=42))
    assert type(w) is WorkloadBase
    assert w.type_name == "UNKNOWN"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"workload_type": 5, "port": "80"}, "port"),
        ({"workload_type": 5, "port": 2**32}, "port"),
        ({"ips": "1.2.3.4"}, "ips"),
        ({"ips": [1, 2]}, "ips.0"),
        ({"domain": 5}, "domain"),
        ({"customer_tid": True}, "customer_tid"),
        ({"next_action": 256}, "next_action"),
        ({"epoch": "2021/01/07"}, "epoch"),
        ({"result": {"state": "ok"}}, "result.state"),
    ],
)
def test_wrong_types_are_workload_errors(override: dict[str, Any], fragment: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse_workload(item(**override))
    assert info.value.real_id == "4521-1"
    assert fragment in info.value.message
    assert info.value.message.startswith("malformed workload:")


@pytest.mark.parametrize("raw", [[1], "x", 5, None])
def test_non_objects_have_no_address(raw: Any) -> None:
    with pytest.raises(WorkloadError) as info:
        parse_workload(raw)
    assert info.value.real_id is None


def test_missing_ids_have_no_address() -> None:
    with pytest.raises(WorkloadError, match="integer 'id'"):
        parse_workload({"id": "1", "workload_id": 1})


def test_lone_surrogates_become_replacement_char() -> None:
    w = parse_workload(item(domain="a\ud800b.example.com"))
    assert isinstance(w, SubdomainWorkload)
    assert w.domain == "a\ufffdb.example.com"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "id", "workload_id", "workload_type", "reference", "customer_tid", "next_action",
        "epoch", "result", "domain", "ips", "addr", "port", "port_tls", "secret",
        "public_key", "version", "customer_signature", "node_id",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json | st.integers(-(2**70), 2**70), max_size=12))
def test_any_json_object_is_a_job_or_a_workload_error(item: dict[str, Any]) -> None:
    message = ""
    try:
        job = job_from_item(item)
    except WorkloadError as exc:
        message = exc.message
        assert message
    else:
        assert job.real_id.count("-") >= 1


def _scrub_reference(value: Any) -> Any:
    """scrub as first written (every value through the regular expression)."""
    if isinstance(value, str):
        return re.sub("[\ud800-\udfff]", "\ufffd", value)
    if isinstance(value, dict):
        return {_scrub_reference(k): _scrub_reference(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_scrub_reference(v) for v in value]
    return value


_scrub_text = st.text(alphabet=st.characters() | st.sampled_from("\ud800\udfffé\x00a"))
_scrub_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _scrub_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_scrub_text, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_scrub_values)
def test_scrub_is_what_it_was(value: Any) -> None:
    got, expected = scrub(value), _scrub_reference(value)
    assert got == expected
    assert repr(got) == repr(expected)  # same types (True stays True, 1.0 stays 1.0)
