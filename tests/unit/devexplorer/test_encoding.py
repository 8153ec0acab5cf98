"""The development explorer's fast encodings give exactly the bytes of the general ones.

The explorer keeps encoded text around and formats common workloads through one format string
(so a 5,000-workload run costs little CPU); these properties pin that every shortcut answers
what the plain rules answer: Go's `json.Marshal` for poll items, `json.dumps` for admin views.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgateway_devexplorer.specs import WorkloadSpec
from tfgateway_devexplorer.store import ExplorerError, Result, Store, Workload
from tfgateway_devexplorer.wire import RawJSON, marshal

NODE = "node-a"
GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}

# Characters that matter to a JSON encoder: quotes, escapes, controls, Go's HTML escapes,
# non-ASCII (kept as is by Go), astral characters.
chars = st.sampled_from(list('ab "\\/\n\t\x00\x1f<>&\u2028\u2029é€😀'))
texts = st.text(alphabet=chars, max_size=12)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
leaves = st.none() | st.booleans() | ints | texts
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def go_oracle(value: Any) -> str:
    """Go's json.Marshal for values without floats: compact, non-ASCII kept, and `<>&`
    U+2028 U+2029 escaped; those can only occur inside strings, so escaping the whole text
    is the same as escaping each string."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: GO_ESCAPES[m.group()], text)


@settings(max_examples=400, deadline=None)
@given(values)
def test_marshal_is_go_json_marshal(value: Any) -> None:
    assert marshal(value) == go_oracle(value).encode()


def test_marshal_floats_and_raw_json_as_go() -> None:
    assert marshal([1.0, 0.5, 1e21, 1e-7, -0.0, 0.0, 100.25]) == b"[1,0.5,1e+21,1e-7,-0,0,100.25]"
    assert marshal({"a": RawJSON('{"x":1}'), "b": (True, None)}) == b'{"a":{"x":1},"b":[true,null]}'


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    """Half usual workloads (the format-string path), half with odd types, keys that collide
    with the common ones, `overrides` or `remove` (the general path)."""
    odd = draw(st.booleans())
    # a bool where an int belongs, or a number where a string belongs, if odd
    some_int = (ints | st.booleans()) if odd else ints
    some_text: st.SearchStrategy[Any] = (texts | st.integers(0, 9)) if odd else texts
    keys = ["domain", "ips", "addr", "port", "x<y"] + (["id", "result"] if odd else [])
    return Workload(
        id=draw(ints),
        workload_id=draw(some_int),
        node_id=draw(some_text),
        workload_type=draw(st.integers(0, 255)),
        customer_tid=draw(some_int),
        next_action=draw(st.integers(0, 7)),
        pool_id=draw(ints),
        reference=draw(texts),
        description=draw(some_text),
        json_text=draw(texts),
        customer_signature=draw(texts),
        epoch=draw(ints),
        metadata=draw(texts),
        version=draw(some_int),
        result=Result(
            category=draw(st.integers(0, 255)),
            workload_id=draw(texts),
            data_json=draw(st.sampled_from(["null", '{"ip":"10.0.0.1"}', "[1,2]", '"<&>"'])),
            signature=draw(texts),
            state=draw(st.integers(0, 2)),
            message=draw(texts),
            epoch=draw(ints),
            node_id=draw(texts),
        ),
        type_fields=draw(st.dictionaries(st.sampled_from(keys), values, max_size=3)),
        overrides=draw(st.none() | st.dictionaries(st.sampled_from(["id", "epoch", "z"]), values))
        if odd
        else None,
        remove=draw(st.none() | st.lists(st.sampled_from(["json", "result", "domain"])))
        if odd
        else None,
    )


@settings(max_examples=400, deadline=None)
@given(workloads())
def test_workload_wire_text_is_marshal_of_wire(workload: Workload) -> None:
    assert workload.wire_text() == marshal(workload.wire()).decode()


def add(store: Store, **fields: Any) -> Workload:
    spec = {"type": "subdomain", "node_id": NODE, "customer_tid": 1, **fields}
    return store.add_workload(WorkloadSpec.model_validate(spec))


def put(store: Store, workload: Workload, state: int) -> None:
    body = {"state": state, "message": "<m>", "data_json": {"ip": "10.0.0.1"}, "category": 7}
    store.put_result(NODE, workload.gwid, json.dumps(body).encode())


def plain_state(store: Store) -> str:
    return json.dumps(store.state(), separators=(",", ":"))


def test_state_json_is_json_of_state_through_every_change() -> None:
    """The cached history and result encodings follow puts, deletes, next_action changes,
    refused calls, a reset and a restore."""
    store = Store()
    assert store.state_json() == plain_state(store)
    first = [add(store, domain=f"n{i}.gw.example", ips=["10.0.0.1"]) for i in range(5)]
    assert store.state_json() == plain_state(store)
    put(store, first[0], 1)
    put(store, first[1], 0)
    assert store.state_json() == plain_state(store)
    put(store, first[0], 1)  # a second PUT of the same workload replaces its result
    store.put_deleted(NODE, first[2].gwid)
    store.set_next_action(first[3].id, 4)
    with pytest.raises(ExplorerError):  # refused (404): in the history all the same
        store.put_result(NODE, "999-1", b'{"state":1}')
    assert store.state_json() == plain_state(store)
    snapshot = json.loads(json.dumps(store.snapshot()))
    store.reset()
    assert store.state_json() == plain_state(store)
    add(store)
    assert store.state_json() == plain_state(store)
    store.restore(snapshot)
    assert store.state_json() == plain_state(store)
    put(store, store.workload(first[4].id), 1)
    assert store.state_json() == plain_state(store)


def test_admin_view_is_the_summary_with_its_wire_item() -> None:
    store = Store()
    plain = add(store, domain="a<b>.gw.example", ips=["10.0.0.1"])
    hostile = add(store, raw='{"id": "not a number"}')
    broken = add(store, raw="{not json")
    for workload, wire in (
        (plain, json.loads(marshal(plain.wire()))),
        (hostile, {"id": "not a number"}),
        (broken, "{not json"),
    ):
        expected = {**store.summary(workload), "wire": wire}
        assert json.loads(store.summary_json(workload)) == expected
    put(store, plain, 1)  # a change is seen by the next view
    assert json.loads(store.summary_json(plain))["wire"]["result"]["state"] == 1
