"""The development explorer over real HTTP: the explorer's status codes, bodies and semantics."""

from __future__ import annotations

import base64
import time
from email.utils import formatdate
from typing import Any

import base58
import pytest
from nacl.signing import SigningKey

from tests.support.http import AsyncHTTP
from tfgateway_devexplorer.admin_client import AdminClient, AdminError

SEED = b"helloworldhelloworldhelloworld12"
NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
PUBKEY_HEX = "db26de5be5a0bd95b775170db6d80f0461d2f7c33742726fd9c6c35d39eeb9de"
# spec §2.1 worked example
VECTOR_DATE = "Thu, 07 Jan 2021 06:13:20 GMT"
VECTOR_AUTH = (
    'Signature keyId="FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85",algorithm="ed25519",'
    'created="1610000000",expires="%!q(int64=1610000060)",headers="(created) date threebot-id",'
    'signature="bnEQfoEuL43oSTHAmqFnjwPaeL01s1Q7DmnXxYFz34KvInjcbyekhxtkkKgfPRTcohvDkRCzZpCS0kKeko9DDg=="'
)
LOCATION = {
    "city": "Ghent",
    "country": "Belgium",
    "continent": "Europe",
    "latitude": 51.05,
    "longitude": 3.7167,
}


def gateway_body(
    node_id: str = NODE, pubkey_hex: str = PUBKEY_HEX, **extra: object
) -> dict[str, object]:
    body: dict[str, object] = {
        "id": 0,
        "node_id": node_id,
        "farm_id": 1,
        "os_version": "v1.2.3@59aa105",
        "created": 0,
        "updated": 0,
        "uptime": 0,
        "address": "",
        "location": LOCATION,
        "public_key_hex": pubkey_hex,
        "managed_domains": ["gateway.example.com"],
        "tcp_router_port": 18000,
        "dns_nameserver": None,
        "free_to_use": False,
    }
    body.update(extra)
    return body


def signed_headers(key: SigningKey, key_id: str | None = None) -> dict[str, str]:
    """What the Go client sends (spec §2): created, Date, Threebot-Id, Authorization."""
    identity = base58.b58encode(bytes(key.verify_key)).decode()
    key_id = key_id or identity
    created = int(time.time())
    date = formatdate(created, usegmt=True)
    text = f"(created): {created}\ndate: {date}\nthreebot-id: {identity}".encode()
    signature = base64.b64encode(key.sign(text).signature).decode()
    auth = (
        f'Signature keyId="{key_id}",algorithm="ed25519",created="{created}",'
        f'expires="%!q(int64={created + 60})",headers="(created) date threebot-id",'
        f'signature="{signature}"'
    )
    return {"Threebot-Id": identity, "Date": date, "Authorization": auth}


async def poll(http: AsyncHTTP, node: str, start: int) -> tuple[list[Any] | None, int]:
    response = await http.get(f"/reservations/nodes/{node}/workloads", params={"from": start})
    assert response.status_code == 200
    assert response.content.endswith(b"\n")
    return response.json(), int(response.headers["X-Last-Id"])


# -- polling -----------------------------------------------------------------------------


async def test_empty_poll_is_null_and_last_id_is_the_global_counter(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    response = await http.get(f"/reservations/nodes/{NODE}/workloads", params={"from": 0})
    assert response.status_code == 200
    assert response.content == b"null\n"
    assert response.headers["X-Last-Id"] == "0"
    assert response.headers["Content-Type"] == "application/json"
    # ids of other nodes' workloads and of users advance the shared counter
    await admin.create_user("00" * 32)
    await admin.subdomain("other-node", 7, "x.example.com", ["1.1.1.1"])
    assert await poll(http, NODE, 0) == (None, 2)


async def test_poll_returns_deploy_and_delete_workloads_with_the_last_id(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    a = await admin.subdomain(NODE, 42, "a.example.com", ["1.2.3.4"])
    await admin.subdomain("other-node", 42, "b.example.com", ["1.2.3.4"])
    c = await admin.delegate(NODE, 42, "c.example.com")
    hidden = await admin.delegate(NODE, 42, "d.example.com", next_action=0)  # not deployable
    items, last = await poll(http, NODE, 0)
    assert [w["id"] for w in items or []] == [a.id, c.id]
    assert last == c.id
    items, last = await poll(http, NODE, c.id)
    assert [w["id"] for w in items or []] == [c.id]
    # beyond the last id: nothing new, so the still-unanswered (queued) ones come back
    items, last = await poll(http, NODE, hidden.id + 1)
    assert [w["id"] for w in items or []] == [a.id, c.id]
    assert last == hidden.id + 1


async def test_poll_pages_at_200(http: AsyncHTTP, admin: AdminClient) -> None:
    created = await admin.create_workloads(
        [{"type": "subdomain", "node_id": NODE, "customer_tid": 1, "domain": f"s{i}.example.com"}
         for i in range(250)]
    )  # fmt: skip
    items, last = await poll(http, NODE, 0)
    assert len(items or []) == 200
    assert last == created[199].id
    items, last = await poll(http, NODE, last + 1)
    assert [w["id"] for w in items or []] == [w.id for w in created[200:]]
    assert last == created[-1].id


async def test_poll_without_numeric_from_does_not_match_the_route(
    http: AsyncHTTP,
) -> None:
    for params in ({}, {"from": "abc"}, {"from": "-1"}):
        response = await http.get(f"/reservations/nodes/{NODE}/workloads", params=params)
        assert response.status_code == 404
        assert response.content == b"404 page not found\n"


async def test_workload_json_has_the_explorer_shape(http: AsyncHTTP, admin: AdminClient) -> None:
    await admin.reverse_proxy(
        NODE, 42, "app.gateway.example.com", "abcd", epoch=1610000000, customer_signature="ab01"
    )
    response = await http.get(f"/reservations/nodes/{NODE}/workloads", params={"from": 0})
    assert response.content == (
        b'[{"workload_id":1,"node_id":"' + NODE.encode() + b'","pool_id":0,"reference":"",'
        b'"description":"","signing_request_provision":{"signers":[],"quorum_min":0},'
        b'"signing_request_delete":{"signers":[],"quorum_min":0},"id":1,"json":"",'
        b'"customer_tid":42,"customer_signature":"ab01","next_action":3,'
        b'"signatures_provision":[],"signature_farmer":{"tid":0,"signature":"","epoch":0},'
        b'"signatures_delete":[],"epoch":1610000000,"metadata":"","result":{"category":0,'
        b'"workload_id":"","data_json":null,"signature":"","state":0,"message":"","epoch":0,'
        b'"node_id":""},"workload_type":6,"version":2,"domain":"app.gateway.example.com",'
        b'"secret":"abcd"}]\n'
    )


# -- results and deletes -----------------------------------------------------------------


async def test_ok_result_is_stored_and_stops_redelivery(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    w = await admin.proxy(NODE, 42, "p.example.com", "185.69.166.1", 80, 443)
    body = (
        b'{"category":5,"workload_id":"ignored","data_json":{"a": 1},"signature":"420a",'
        b'"state":1,"message":"","epoch":1610000005,"node_id":""}\n'
    )
    response = await http.put(f"/reservations/nodes/{NODE}/workloads/{w.gwid}", content=body)
    assert (response.status_code, response.content) == (201, b"null\n")
    info = await admin.get_workload(w.id)
    assert info.next_action == 3
    assert info.result["workload_id"] == w.gwid  # overwritten from the path
    assert info.result["node_id"] == NODE
    assert info.result["data_json"] == '{"a":1}'
    assert info.result["state"] == 1
    assert abs(info.result["epoch"] - time.time()) < 60
    # answered: not queued any more, so a poll past it is empty
    assert await poll(http, NODE, w.id + 1) == (None, w.id)
    # still deploy: a poll from the start replays it with its result
    items, _ = await poll(http, NODE, 0)
    assert items is not None
    assert items[0]["result"]["state"] == 1


async def test_error_result_turns_next_action_to_delete_then_delete_to_deleted(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    w = await admin.subdomain(NODE, 42, "e.example.com", ["1.2.3.4"])
    body = (
        b'{"category":7,"workload_id":"","data_json":null,"signature":"","state":0,"message":"bad"}'
    )
    response = await http.put(f"/reservations/nodes/{NODE}/workloads/{w.gwid}", content=body)
    assert response.status_code == 201
    assert (await admin.get_workload(w.id)).next_action == 4
    items, _ = await poll(http, NODE, 0)
    assert [i["next_action"] for i in items or []] == [4]
    response = await http.delete(f"/reservations/nodes/{NODE}/workloads/{w.gwid}")
    assert (response.status_code, response.content) == (200, b"null\n")
    info = await admin.get_workload(w.id)
    assert (info.next_action, info.state, info.result["message"]) == (6, 2, "bad")
    assert await poll(http, NODE, 0) == (None, w.id)
    state = await admin.state()
    assert [(d["gwid"], d["status"]) for d in state["deletes"]] == [(w.gwid, 200)]


async def test_delete_without_result_creates_a_deleted_result(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    w = await admin.delegate(NODE, 42, "f.example.com")
    await admin.delete_workload(w.id)
    items, _ = await poll(http, NODE, 0)
    assert [(i["id"], i["next_action"]) for i in items or []] == [(w.id, 4)]
    response = await http.delete(f"/reservations/nodes/{NODE}/workloads/{w.gwid}")
    assert response.status_code == 200
    info = await admin.get_workload(w.id)
    assert info.result["workload_id"] == w.gwid
    assert info.result["state"] == 2
    assert info.next_action == 6


async def test_result_and_delete_for_unknown_workloads_are_404_json(
    http: AsyncHTTP, admin: AdminClient
) -> None:
    w = await admin.delegate(NODE, 42, "g.example.com", workload_id=1)
    for method in ("PUT", "DELETE"):
        for gwid in ("999-1", f"{w.id}-2"):
            response = await http.request(
                method, f"/reservations/nodes/{NODE}/workloads/{gwid}", content=b"{}"
            )
            assert response.status_code == 404, (method, gwid)
            assert "error" in response.json()
            assert response.content.endswith(b"}\n")
    # not matching \d+-\d+: the route does not exist
    response = await http.put(f"/reservations/nodes/{NODE}/workloads/abc", content=b"{}")
    assert response.status_code in (404, 405)


async def test_result_with_wrong_json_types_is_400(http: AsyncHTTP, admin: AdminClient) -> None:
    w = await admin.delegate(NODE, 42, "h.example.com")
    for body in (b"", b"[1]", b'{"state":"ok"}', b'{"state":256}', b"{not json"):
        response = await http.put(f"/reservations/nodes/{NODE}/workloads/{w.gwid}", content=body)
        assert response.status_code == 400, body
        assert response.json()["error"]
    assert (await admin.get_workload(w.id)).answered is False


# -- registration ------------------------------------------------------------------------


async def test_register_is_an_upsert_keyed_by_node_id(http: AsyncHTTP, admin: AdminClient) -> None:
    response = await http.post("/gateways", json=gateway_body())
    assert (response.status_code, response.content) == (201, b"null\n")
    first = (await admin.state())["gateways"][NODE]
    response = await http.post("/gateways", json=gateway_body(farm_id=9))
    assert response.status_code == 201
    second = (await admin.state())["gateways"][NODE]
    assert (second["id"], second["created"], second["farm_id"]) == (
        first["id"],
        first["created"],
        9,
    )
    assert second["registrations"] == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"node_id": ""}, "node_is is required"),
        ({"os_version": ""}, "os_version is required"),
        ({"public_key_hex": ""}, "public_key_hex is required"),
        ({"public_key_hex": "zz"}, "fail to decode public key"),
        ({"node_id": "4CcKDtU1JNGi8U4D8Rv9CHzfmF7xzaxEAPFA54eQjRHF"}, "does not match"),
        ({"location": {}}, "location is required"),
        ({"location": None}, "location is required"),
    ],
)
async def test_register_validation_matches_the_explorer(
    http: AsyncHTTP, changes: dict[str, Any], message: str
) -> None:
    response = await http.post("/gateways", json=gateway_body(**changes))
    # the real handler returns validation errors through mw.Error: HTTP 500
    assert response.status_code == 500
    assert message in response.json()["error"]


async def test_register_with_wrong_types_is_400(http: AsyncHTTP) -> None:
    for body in (b"{", b'{"node_id": 5}', b'{"location": {"latitude": "x"}}', b"[]"):
        response = await http.post("/gateways", content=body)
        assert response.status_code == 400, body


# -- signed routes -----------------------------------------------------------------------


async def test_uptime_accepts_the_spec_vector_request(http: AsyncHTTP, admin: AdminClient) -> None:
    assert (await http.post("/gateways", json=gateway_body())).status_code == 201
    headers = {"Threebot-Id": NODE, "Date": VECTOR_DATE, "Authorization": VECTOR_AUTH}
    response = await http.post(
        f"/gateways/{NODE}/uptime", content=b'{"uptime":1234}\n', headers=headers
    )
    assert (response.status_code, response.content) == (200, b"null\n")
    state = await admin.state()
    assert [p["uptime"] for p in state["uptime_posts"]] == [1234]


async def test_tampered_signatures_are_401(http: AsyncHTTP) -> None:
    assert (await http.post("/gateways", json=gateway_body())).status_code == 201
    good = {"Threebot-Id": NODE, "Date": VECTOR_DATE, "Authorization": VECTOR_AUTH}
    variants = [
        {**good, "Date": "Thu, 07 Jan 2021 06:13:21 GMT"},
        {
            **good,
            "Authorization": VECTOR_AUTH.replace('created="1610000000"', 'created="1610000001"'),
        },
        {**good, "Threebot-Id": "4CcKDtU1JNGi8U4D8Rv9CHzfmF7xzaxEAPFA54eQjRHF"},
        {
            **good,
            "Authorization": VECTOR_AUTH.replace("(created) date threebot-id", "(created) date"),
        },
        {**good, "Authorization": VECTOR_AUTH.replace("bnEQ", "bnEE")},
        {"Threebot-Id": NODE, "Date": VECTOR_DATE},
        {
            **good,
            "Authorization": VECTOR_AUTH.replace('algorithm="ed25519"', 'algorithm="hmac-sha256"'),
        },
    ]
    for headers in variants:
        response = await http.post(
            f"/gateways/{NODE}/uptime", content=b'{"uptime":1}', headers=headers
        )
        assert response.status_code == 401, headers
        assert response.json()["error"].startswith("unauthorized access: ")
        assert (
            response.headers["WWW-Authenticate"] == 'Signature headers="(created) date threebot-id"'
        )


async def test_another_gateways_key_is_403_and_unknown_gateway_404(
    http: AsyncHTTP,
) -> None:
    other = SigningKey(b"12345678901234567890123456789012")
    other_id = base58.b58encode(bytes(other.verify_key)).decode()
    assert (await http.post("/gateways", json=gateway_body())).status_code == 201
    # validly signed by another gateway, addressed to NODE
    response = await http.post(
        f"/gateways/{NODE}/reserved_resources", content=b"{}", headers=signed_headers(other)
    )
    assert response.status_code == 403
    assert other_id in response.json()["error"]
    # validly signed, but that gateway never registered
    response = await http.post(
        f"/gateways/{other_id}/uptime", content=b'{"uptime":1}', headers=signed_headers(other)
    )
    assert response.status_code == 404


async def test_reserved_resources_are_recorded(http: AsyncHTTP, admin: AdminClient) -> None:
    key = SigningKey(SEED)
    assert (await http.post("/gateways", json=gateway_body())).status_code == 201
    body = (
        b'{"cru":0,"mru":0,"hru":0,"sru":0,"network":0,"network_resource":0,"volume":0,'
        b'"zdb_namespace":0,"container":0,"k8s_vm":0,"proxy":1,"reverse_proxy":2,'
        b'"subdomain":3,"delegate_domain":4}\n'
    )
    response = await http.post(
        f"/gateways/{NODE}/reserved_resources", content=body, headers=signed_headers(key)
    )
    assert (response.status_code, response.content) == (200, b"null\n")
    (post,) = (await admin.state())["reserved_resources_posts"]
    assert (post["proxy"], post["reverse_proxy"], post["subdomain"], post["delegate_domain"]) == (
        1,
        2,
        3,
        4,
    )


# -- phonebook ---------------------------------------------------------------------------


async def test_phonebook_user(http: AsyncHTTP, admin: AdminClient) -> None:
    pub = "48075a597e721a156e2e0799de5cc0c5324dc6e7eaf1cdd46250868ec53215dd"
    user = await admin.create_user(pub, name="alice.3bot", user_id=42)
    assert user.id == 42
    response = await http.get("/users/42")
    assert response.content == (
        b'{"id":42,"name":"alice.3bot","email":"","pubkey":"' + pub.encode() + b'",'
        b'"host":"","description":""}\n'
    )
    assert (await http.get("/users/43")).status_code == 404
    assert (await http.get("/users/x")).status_code == 400
    # explicit ids move the shared counter
    w = await admin.delegate(NODE, 42, "u.example.com")
    assert w.id == 43


# -- admin API ---------------------------------------------------------------------------


async def test_hostile_items_are_served_as_asked(http: AsyncHTTP, admin: AdminClient) -> None:
    await admin.create_workload("proxy", NODE, 42, domain=["x"], port="80", overrides={"id": "7"})
    await admin.create_workload(42, NODE, 42, raw='{"workload_type": 42, "id": []}')
    await admin.create_workload("subdomain", NODE, 42, remove=["ips", "domain"])
    response = await http.get(f"/reservations/nodes/{NODE}/workloads", params={"from": 0})
    first, second, third = response.json()
    assert (first["domain"], first["port"], first["id"]) == (["x"], "80", "7")
    assert second == {"workload_type": 42, "id": []}
    assert "ips" not in third
    assert "domain" not in third
    assert response.headers["X-Last-Id"] == "3"


async def test_admin_errors_name_the_problem(admin: AdminClient) -> None:
    with pytest.raises(AdminError) as err:
        await admin.create_workload("ftp", NODE, 1)
    assert err.value.status == 400
    assert err.value.message.startswith("type: unknown workload type 'ftp'")
    with pytest.raises(AdminError) as err:
        await admin.create_workloads([{"type": "proxy", "node_id": NODE}, {"type": "x"}])
    assert "[1].type: unknown workload type 'x'" in err.value.message
    assert "[1].node_id: Field required" in err.value.message
    assert (await admin.list_workloads()) == []  # nothing added when one spec is bad
    with pytest.raises(AdminError) as err:
        await admin.create_workload("proxy", NODE, 1, colour="red")
    assert "colour" in err.value.message
    await admin.delegate(NODE, 1, "x.example.com", id=5)
    with pytest.raises(AdminError) as err:
        await admin.delegate(NODE, 1, "y.example.com", id=5)
    assert err.value.status == 409
    with pytest.raises(AdminError) as err:
        await admin.get_workload(99)
    assert err.value.status == 404
    with pytest.raises(AdminError) as err:
        await admin.set_faults(error_status=200)
    assert err.value.status == 400


async def test_reset_forgets_everything(http: AsyncHTTP, admin: AdminClient) -> None:
    await admin.delegate(NODE, 1, "x.example.com")
    await admin.set_faults(error_requests=5)
    await admin.reset()
    assert await poll(http, NODE, 0) == (None, 0)
    assert (await admin.faults())["remaining"]["error"] == 0
