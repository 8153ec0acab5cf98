"""Explorer semantics of the development explorer's store (no HTTP): cursor, queue, transitions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgateway_devexplorer.specs import SeedFile, UserSpec, WorkloadSpec, workload_type_number
from tfgateway_devexplorer.store import ExplorerError, Store
from tfgateway_devexplorer.wire import RawJSON, encode, marshal

NODE = "node-a"


def add(store: Store, **fields: Any) -> int:
    spec = {"type": "subdomain", "node_id": NODE, "customer_tid": 1, **fields}
    return store.add_workload(WorkloadSpec.model_validate(spec)).id


def ids(store: Store, start: int, node: str = NODE) -> tuple[list[int], int]:
    found, last = store.poll(node, str(start))
    return [w.id for w in found], last


def test_ids_come_from_one_counter_for_users_and_workloads() -> None:
    store = Store()
    assert add(store) == 1
    assert store.add_user(UserSpec(pubkey="00")).id == 2
    assert add(store, id=10) == 10
    assert add(store) == 11
    with pytest.raises(ExplorerError) as err:
        store.add_user(UserSpec(id=11, pubkey="00"))
    assert err.value.status == 409


def test_explicit_lower_id_keeps_the_counter() -> None:
    store = Store()
    add(store, id=5)
    assert add(store, id=3) == 3
    assert add(store) == 6


def test_cursor_filters_by_node_id_and_next_action() -> None:
    store = Store()
    a = add(store)
    add(store, node_id="other")
    for action in (0, 1, 2, 5, 6, 7):
        add(store, next_action=action)
    d = add(store, next_action=4)
    assert ids(store, 0) == ([a, d], d)
    assert ids(store, a + 1) == ([d], d)


def test_queue_redelivers_unanswered_workloads_only_when_nothing_is_new() -> None:
    store = Store()
    a = add(store)
    b = add(store)
    assert ids(store, b + 1) == ([a, b], b + 1)
    store.put_result(NODE, f"{a}-1", b'{"state":1}')
    assert ids(store, b + 1) == ([b], b + 1)
    store.put_deleted(NODE, f"{b}-1")
    assert ids(store, b + 1) == ([], b)  # nothing at all: X-Last-Id = global counter


def test_cursor_pages_stay_in_id_order_after_out_of_order_additions() -> None:
    store = Store()
    first = [add(store) for _ in range(250)]
    assert ids(store, 0) == (first[:200], first[199])
    low = add(store, id=1000)
    late = add(store, id=900)  # a lower id added later is still served in id order
    assert ids(store, first[200]) == ([*first[200:], late, low], low)
    assert ids(store, late) == ([late, low], low)


def test_progress_counts_a_nodes_results_and_its_last_put() -> None:
    store = Store(clock=lambda: 1000.5)
    ok, bad, waiting = add(store), add(store), add(store)
    add(store, node_id="other")
    store.put_result(NODE, f"{ok}-1", b'{"state":1}')
    store.put_result(NODE, f"{bad}-1", b'{"state":0,"message":"nope"}')
    progress = store.progress(NODE)
    assert progress["workloads"] == 3
    assert progress["queued"] == 1  # `waiting`
    assert progress["results"] == {"none": 1, "ok": 1, "error": 1, "deleted": 0}
    assert progress["last_result_put"] == 1000.5
    store.put_deleted(NODE, f"{waiting}-1")
    assert store.progress(NODE)["results"]["deleted"] == 1
    assert store.progress("other")["last_result_put"] is None


def walked_progress(store: Store, node_id: str) -> dict[str, Any]:
    """What `progress` must say, by walking every workload (as it once did)."""
    states = {"none": 0, "ok": 0, "error": 0, "deleted": 0}
    names = {0: "error", 1: "ok", 2: "deleted"}
    mine = [w for w in store.workloads.values() if w.node_id == node_id]
    for w in mine:
        states[names.get(w.result.state, "error") if w.result.workload_id else "none"] += 1
    return {"workloads": len(mine), "queued": sum(w.queued for w in mine), "results": states}


OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "ok", "error", "delete", "next", "progress", "restore", "reset"]),
        st.integers(0, 7),
        st.sampled_from([NODE, "node-b"]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_progress_counts_only_what_changed_and_agrees_with_a_walk(
    ops: list[tuple[str, int, str]],
) -> None:
    """`progress` keeps per-node counts and counts again only changed workloads: after any
    sequence of changes it says what a walk over every workload says."""
    store = Store(clock=lambda: 1000.0)
    for op, pick, node in ops:
        ids = sorted(store.workloads)
        target = store.workloads[ids[pick % len(ids)]] if ids else None
        if op == "add":
            add(store, node_id=node)
        elif op in ("ok", "error") and target is not None:
            state = 1 if op == "ok" else 0
            store.put_result(target.node_id, target.gwid, b'{"state":%d}' % state)
        elif op == "delete" and target is not None:
            store.put_deleted(target.node_id, target.gwid)
        elif op == "next" and target is not None:
            store.set_next_action(target.id, pick % 7)
        elif op == "progress":
            store.progress(node)
        elif op == "restore":
            store.restore(json.loads(json.dumps(store.snapshot())))
        elif op == "reset":
            store.reset()
        for node_id in (NODE, "node-b"):
            got = store.progress(node_id)
            assert {k: got[k] for k in ("workloads", "queued", "results")} == walked_progress(
                store, node_id
            )


def test_result_state_transitions() -> None:
    store = Store()
    ok, bad = add(store), add(store)
    store.put_result(NODE, f"{ok}-1", b'{"state":1,"data_json":{"ips": ["::1"]}}')
    store.put_result(NODE, f"{bad}-1", b'{"state":0,"message":"nope"}')
    assert store.workloads[ok].next_action == 3
    assert store.workloads[ok].result.data_json == '{"ips":["::1"]}'
    assert store.workloads[bad].next_action == 4
    store.put_deleted(NODE, f"{bad}-1")
    assert (store.workloads[bad].next_action, store.workloads[bad].result.state) == (6, 2)
    assert store.workloads[bad].result.message == "nope"


def test_result_ids_must_match_id_and_workload_id() -> None:
    store = Store()
    a = add(store, workload_id=3)
    for gwid in (f"{a}-1", "99-3", "99999999999999999999-1"):
        with pytest.raises(ExplorerError) as err:
            store.put_result(NODE, gwid, b"{}")
        assert err.value.status in (400, 404)
    store.put_result("any-node", f"{a}-3", b"{}")  # the explorer does not check the node
    assert store.workloads[a].result.node_id == "any-node"


def test_poll_body_is_null_when_empty_and_raw_items_are_verbatim() -> None:
    store = Store()
    assert store.render_poll([]) == b"null"
    add(store, raw='{"id": "not a number"}')
    found, _ = store.poll(NODE, "0")
    assert store.render_poll(found) == b'[{"id": "not a number"}]'


def test_overrides_and_remove_shape_hostile_workloads() -> None:
    store = Store()
    wid = add(store, overrides={"domain": 5, "extra": [1]}, remove=["ips", "result"])
    obj = store.workloads[wid].wire()
    assert obj["domain"] == 5
    assert list(obj)[-1] == "extra"
    assert "ips" not in obj
    assert "result" not in obj


def test_register_validation_and_upsert() -> None:
    store = Store(clock=lambda: 1000.0)
    body: dict[str, Any] = {
        "node_id": "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85",
        "os_version": "v",
        "public_key_hex": "db26de5be5a0bd95b775170db6d80f0461d2f7c33742726fd9c6c35d39eeb9de",
        "location": {"latitude": 0.5},
    }
    store.register_gateway(json.dumps(body).encode())
    store.clock = lambda: 2000.0
    store.register_gateway(json.dumps(body).encode())
    gw = store.gateways[body["node_id"]]
    assert (gw["id"], gw["created"], gw["updated"]) == (1, 1000, 2000)
    with pytest.raises(ExplorerError, match="location is required") as err:
        store.register_gateway(json.dumps({**body, "location": {"city": ""}}).encode())
    assert err.value.status == 500


def test_snapshot_restores_everything() -> None:
    store = Store()
    a = add(store, domain="x.example.com", overrides={"k": "v"})
    store.add_user(UserSpec(pubkey="ab", name="bob"))
    store.put_result(NODE, f"{a}-1", b'{"state":1}')
    copy = Store()
    copy.restore(json.loads(marshal(store.snapshot())))
    assert copy.snapshot() == json.loads(marshal(store.snapshot()))
    assert copy.workloads[a].wire() == store.workloads[a].wire()
    assert add(copy) == add(store)


def test_workload_types_by_name_alias_and_number() -> None:
    assert workload_type_number("domain-delegate") == 8
    assert workload_type_number("4to6") == 9
    assert workload_type_number(200) == 200
    with pytest.raises(ValueError, match="unknown workload type"):
        workload_type_number("ftp")


def test_seed_file_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"workloads\.0\.type"):
        SeedFile.model_validate({"workloads": [{"type": "ftp", "node_id": "n"}]})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, b"0"),
        (51.0, b"51"),
        (51.05, b"51.05"),
        (1e-7, b"1e-7"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        ("<a&b>", b'"\\u003ca\\u0026b\\u003e"'),
        ("\u2028é", b'"\\u2028\xc3\xa9"'),
        ({"b": 1, "a": [None, True]}, b'{"b":1,"a":[null,true]}'),
        (RawJSON('{"x":1}'), b'{"x":1}'),
    ],
)
def test_go_json_encoding(value: Any, expected: bytes) -> None:
    assert marshal(value) == expected
    assert encode(value) == expected + b"\n"


def test_a_delete_is_queued_so_a_cursor_past_it_still_sees_it() -> None:
    store = Store()
    a = add(store)
    later = add(store)
    store.put_result(NODE, f"{a}-1", b'{"state":1}')
    store.put_result(NODE, f"{later}-1", b'{"state":1}')
    assert ids(store, later + 1) == ([], later)
    store.set_next_action(a, 4)  # the user deletes it
    found, last = store.poll(NODE, str(later + 1))
    assert [(w.id, w.next_action) for w in found] == [(a, 4)]
    assert last == later + 1
    store.put_deleted(NODE, f"{a}-1")  # pops the queue entry
    assert ids(store, later + 1) == ([], later)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (b'{"state":1,"data_json":{ "x" : 1.0, "y": [1e2, "a b"] }}', '{"x":1.0,"y":[1e2,"a b"]}'),
        (b'{"state":1,"data_json":"<&>"}', '"\\u003c\\u0026\\u003e"'),
        (b'{"state":1,"DATA_JSON":{"\\u00e9":null}}', '{"\\u00e9":null}'),
        (b'{"state":1,"data_json":null}', "null"),
        (b'{"state":1}', "null"),
    ],
)
def test_data_json_is_kept_raw_like_a_go_raw_message(sent: bytes, stored: str) -> None:
    store = Store()
    a = add(store)
    store.put_result(NODE, f"{a}-1", sent)
    assert store.workloads[a].result.data_json == stored
    found, _ = store.poll(NODE, "0")
    assert f'"data_json":{stored},'.encode() in store.render_poll(found)
