"""Explorer client: exact paths, bodies, status codes, signatures, errors and back-off."""

from __future__ import annotations

import base64
import re

import httpx
import nacl.signing
import pytest
from tfgateway.explorer import (
    Backoff,
    ExplorerClient,
    ExplorerError,
    PollDecodeError,
    base_url,
    gateway_body,
    retrying,
)
from tfgateway.httpsig import signing_string
from tfgateway.identity import Identity
from tfgateway.models import Location

SEED = b"helloworldhelloworldhelloworld12"
NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
BASE = "http://explorer.test/api/v1"


class Recorder:
    def __init__(self, *responses: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self.responses = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0) if self.responses else httpx.Response(200, content=b"null\n")


def client(rec: Recorder) -> ExplorerClient:
    return ExplorerClient(BASE, Identity(SEED), transport=httpx.MockTransport(rec), timeout=3)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://explorer.grid.tf/api/v1", "https://explorer.grid.tf/api/v1"),
        ("https://h/", "https://h/api/v1"),
        ("https://h/api/v1/", "https://h/api/v1"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/v1"),
        ("http://h/other/path", "http://h/api/v1"),
        ("http://h/x/api/v1", "http://h/x/api/v1"),
    ],
)
def test_base_url_rule(given: str, expected: str) -> None:
    assert base_url(given) == expected


def test_base_url_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="http"):
        base_url("explorer.grid.tf")


def assert_signed(request: httpx.Request) -> None:
    auth = request.headers["Authorization"]
    assert request.headers["Threebot-Id"] == NODE
    created = int(re.search(r'created="(\d+)"', auth).group(1))  # type: ignore[union-attr]
    sig = base64.b64decode(re.search(r'signature="([^"]+)"', auth).group(1))  # type: ignore[union-attr]
    text = signing_string(created, request.headers["Date"], NODE)
    nacl.signing.VerifyKey(Identity(SEED).public_key).verify(text, sig)


async def test_register_body_is_go_bytes() -> None:
    rec = Recorder(httpx.Response(201, content=b"null\n"))
    c = client(rec)
    body = gateway_body(
        node_id=NODE,
        public_key_hex=Identity(SEED).public_key_hex,
        farm_id=1,
        os_version="v1.2.3@59aa105",
        location=Location(
            city="Ghent", country="Belgium", continent="Europe", latitude=51.05, longitude=3.7167
        ),
        domains=["gateway.example.com"],
        nameservers=None,
        tcp_router_port=18000,
        free_to_use=False,
    )
    await c.register(body)
    await c.aclose()
    (req,) = rec.requests
    assert req.method == "POST"
    assert str(req.url) == "http://explorer.test/api/v1/gateways"
    assert req.content == (
        b'{"id":0,"node_id":"FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85","farm_id":1,'
        b'"os_version":"v1.2.3@59aa105","created":0,"updated":0,"uptime":0,"address":"",'
        b'"location":{"city":"Ghent","country":"Belgium","continent":"Europe","latitude":51.05,'
        b'"longitude":3.7167},"public_key_hex":'
        b'"db26de5be5a0bd95b775170db6d80f0461d2f7c33742726fd9c6c35d39eeb9de","workloads":'
        b'{"network":0,"network_resource":0,"volume":0,"zdb_namespace":0,"container":0,'
        b'"k8s_vm":0,"proxy":0,"reverse_proxy":0,"subdomain":0,"delegate_domain":0},'
        b'"managed_domains":["gateway.example.com"],"tcp_router_port":18000,'
        b'"dns_nameserver":null,"free_to_use":false}\n'
    )
    assert "content-type" not in req.headers
    assert_signed(req)


async def test_uptime_and_reserved_resources() -> None:
    rec = Recorder()
    c = client(rec)
    await c.update_uptime(1234)
    await c.update_reserved_resources(
        {"proxy": 1, "reverse_proxy": 2, "subdomain": 3, "delegate_domain": 4}
    )
    await c.aclose()
    up, rr = rec.requests
    assert str(up.url) == f"{BASE}/gateways/{NODE}/uptime"
    assert up.content == b'{"uptime":1234}\n'
    assert str(rr.url) == f"{BASE}/gateways/{NODE}/reserved_resources"
    assert rr.content == (
        b'{"cru":0,"mru":0,"hru":0,"sru":0,"network":0,"network_resource":0,"volume":0,'
        b'"zdb_namespace":0,"container":0,"k8s_vm":0,"proxy":1,"reverse_proxy":2,'
        b'"subdomain":3,"delegate_domain":4}\n'
    )
    assert_signed(up)
    assert_signed(rr)


async def test_poll_null_body_and_last_id_unsigned() -> None:
    rec = Recorder(
        httpx.Response(200, content=b"null\n", headers={"X-Last-Id": "77"}),
        httpx.Response(200, content=b'[{"id":1}]\n'),
    )
    c = client(rec)
    first = await c.poll(0)
    second = await c.poll(78)
    await c.aclose()
    assert (first.items, first.last_id) == ([], 77)
    assert (second.items, second.last_id) == ([{"id": 1}], 0)
    assert str(rec.requests[0].url) == f"{BASE}/reservations/nodes/{NODE}/workloads?from=0"
    assert str(rec.requests[1].url).endswith("workloads?from=78")
    assert "Authorization" not in rec.requests[0].headers


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'[{"id":1},', {"X-Last-Id": "5"}),  # truncated
        (b'{"id":1}', {"X-Last-Id": "5"}),  # not an array
        (b"[]", {"X-Last-Id": "five"}),  # bad header
    ],
)
async def test_poll_undecodable_is_not_retryable(content: bytes, headers: dict[str, str]) -> None:
    c = client(Recorder(httpx.Response(200, content=content, headers=headers)))
    with pytest.raises(PollDecodeError) as info:
        await c.poll(3)
    await c.aclose()
    assert not info.value.retryable


async def test_put_result_and_delete_paths() -> None:
    rec = Recorder(httpx.Response(201, content=b"null\n"), httpx.Response(200))
    c = client(rec)
    body = b'{"category":7,"workload_id":"4521-1","data_json":null}\n'
    await c.put_result("4521-1", body)
    await c.delete_workload("4521-1")
    await c.aclose()
    put, delete = rec.requests
    assert (put.method, str(put.url)) == (
        "PUT",
        f"{BASE}/reservations/nodes/{NODE}/workloads/4521-1",
    )
    assert put.content == body
    assert (delete.method, delete.content) == ("DELETE", b"")
    assert str(delete.url) == f"{BASE}/reservations/nodes/{NODE}/workloads/4521-1"


async def test_path_segments_are_escaped() -> None:
    rec = Recorder(httpx.Response(200))
    c = client(rec)
    await c.delete_workload("../../gateways")
    await c.aclose()
    assert rec.requests[0].url.raw_path.endswith(b"/workloads/..%2F..%2Fgateways")


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
async def test_status_codes_classified(status: int, retryable: bool) -> None:
    errors: list[str] = []
    c = ExplorerClient(
        BASE,
        Identity(SEED),
        transport=httpx.MockTransport(
            lambda r: httpx.Response(status, content=b'{"error":"boom here"}\n')
        ),
        on_error=errors.append,
    )
    with pytest.raises(ExplorerError, match="boom here") as info:
        await c.delete_workload("1-1")
    await c.aclose()
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert errors == ["delete"]


async def test_wrong_success_code_is_an_error() -> None:
    c = client(Recorder(httpx.Response(200)))
    with pytest.raises(ExplorerError, match="HTTP 200"):
        await c.put_result("1-1", b"{}\n")  # PUT expects 201
    await c.aclose()


async def test_transport_error_is_retryable_and_timeout_set() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"]["read"] == 3
        raise httpx.ConnectError("refused")

    c = ExplorerClient(BASE, Identity(SEED), transport=httpx.MockTransport(boom), timeout=3)
    with pytest.raises(ExplorerError, match="request failure") as info:
        await c.update_uptime(1)
    await c.aclose()
    assert info.value.retryable


async def test_get_user() -> None:
    rec = Recorder(
        httpx.Response(200, content=b'{"id":42,"name":"alice.3bot","pubkey":"48075a59","x":1}')
    )
    c = client(rec)
    user = await c.get_user(42)
    await c.aclose()
    assert user.pubkey == "48075a59"
    assert str(rec.requests[0].url) == f"{BASE}/users/42"


def test_backoff_capped_with_jitter() -> None:
    b = Backoff(initial=1, maximum=8, multiplier=2, jitter=0.5)
    delays = [b.next_delay() for _ in range(10)]
    for i, d in enumerate(delays):
        cap = min(8, 2**i)
        assert cap * 0.5 <= d <= cap
    b.reset()
    assert b.next_delay() <= 1


async def test_retrying_retries_only_retryable() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ExplorerError("down", retryable=True)
        return "ok"

    fast = Backoff(initial=0.001, maximum=0.002)
    assert await retrying(flaky, what="x", backoff=fast) == "ok"
    assert calls == 3

    async def fatal() -> str:
        raise ExplorerError("bad request", status=400, retryable=False)

    with pytest.raises(ExplorerError, match="bad request"):
        await retrying(fatal, what="x", backoff=fast)
