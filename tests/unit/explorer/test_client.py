"""Explorer client against a real local HTTP server that records every request as received:
exact method, request target, headers and body bytes; status classification, timeouts,
bounded reads, no redirects, keep-alive pooling; and the back-off helpers."""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDictProxy

import tfgateway.explorer.client as explorer_module
from tests.support.processes import free_port
from tfgateway.explorer.client import (
    Backoff,
    ExplorerClient,
    ExplorerError,
    PollDecodeError,
    base_url,
    gateway_body,
    retrying,
)
from tfgateway.explorer.signatures import signing_string
from tfgateway.node.identity import Identity
from tfgateway.node.location import Location

SEED = b"helloworldhelloworldhelloworld12"
NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
WORKLOADS = f"/api/v1/reservations/nodes/{NODE}/workloads"
# Headers a request may carry; anything else (Content-Type above all) must not be sent.
ALLOWED_HEADERS = {
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "content-length",
    "threebot-id",
    "date",
    "authorization",
}

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    target: str
    headers: CIMultiDictProxy[str]
    body: bytes
    peer: tuple[str, int]


def reply(status: int = 200, body: bytes = b"null\n", **headers: str) -> Handler:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return answer


@dataclass
class Explorer:
    """Answers requests with the queued handlers in order (then 200 `null`), recording each."""

    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: list[Handler] = field(default_factory=list)

    def queue(self, *handlers: Handler) -> None:
        self.replies.extend(handlers)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        self.seen.append(
            Seen(request.method, request.raw_path, request.headers, body, tuple(peer[:2]))
        )
        handler = self.replies.pop(0) if self.replies else reply()
        return await handler(request)


@pytest.fixture
async def explorer() -> AsyncIterator[Explorer]:
    server = Explorer()
    runner = web.ServerRunner(web.Server(server.handle, handler_cancellation=True))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}/api/v1"
    try:
        yield server
    finally:
        await runner.cleanup()


def client(server: Explorer, **kwargs: object) -> ExplorerClient:
    options: dict[str, object] = {"timeout": 3.0} | kwargs
    return ExplorerClient(server.base, Identity(SEED), **options)  # type: ignore[arg-type]


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


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan"), float("inf")])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        ExplorerClient("http://127.0.0.1:1", Identity(SEED), timeout=timeout)


def assert_signed(request: Seen) -> None:
    auth = request.headers["Authorization"]
    assert request.headers["Threebot-Id"] == NODE
    created = int(re.search(r'created="(\d+)"', auth).group(1))  # type: ignore[union-attr]
    sig = base64.b64decode(re.search(r'signature="([^"]+)"', auth).group(1))  # type: ignore[union-attr]
    text = signing_string(created, request.headers["Date"], NODE)
    nacl.signing.VerifyKey(Identity(SEED).public_key).verify(text, sig)


def assert_plain_headers(request: Seen) -> None:
    assert {k.lower() for k in request.headers} <= ALLOWED_HEADERS, request.headers
    assert request.headers["User-Agent"] == "tfgateway/2"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", request.headers["Host"])


async def test_register_body_is_go_bytes(explorer: Explorer) -> None:
    explorer.queue(reply(201))
    c = client(explorer)
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
    (req,) = explorer.seen
    assert (req.method, req.target) == ("POST", "/api/v1/gateways")
    assert req.body == (
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
    assert req.headers["Content-Length"] == str(len(req.body))
    assert "Content-Type" not in req.headers
    assert "Transfer-Encoding" not in req.headers
    assert_plain_headers(req)
    assert_signed(req)


async def test_spec_vector_signature_on_the_wire(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§2.1: at created = 1610000000 the headers sent are the spec's, byte for byte."""
    monkeypatch.setattr(time, "time", lambda: 1610000000.0)
    c = client(explorer)
    await c.update_uptime(42)
    await c.aclose()
    (req,) = explorer.seen
    assert req.headers["Threebot-Id"] == NODE
    assert req.headers["Date"] == "Thu, 07 Jan 2021 06:13:20 GMT"
    assert req.headers["Authorization"] == (
        f'Signature keyId="{NODE}",algorithm="ed25519",created="1610000000",'
        'expires="%!q(int64=1610000060)",headers="(created) date threebot-id",'
        'signature="bnEQfoEuL43oSTHAmqFnjwPaeL01s1Q7DmnXxYFz34KvInjcbyekhxtkkKgfPRTcohvDkRCzZp'
        'CS0kKeko9DDg=="'
    )


async def test_uptime_and_reserved_resources(explorer: Explorer) -> None:
    c = client(explorer)
    await c.update_uptime(1234)
    await c.update_reserved_resources(
        {"proxy": 1, "reverse_proxy": 2, "subdomain": 3, "delegate_domain": 4}
    )
    await c.aclose()
    up, rr = explorer.seen
    assert (up.method, up.target) == ("POST", f"/api/v1/gateways/{NODE}/uptime")
    assert up.body == b'{"uptime":1234}\n'
    assert (rr.method, rr.target) == ("POST", f"/api/v1/gateways/{NODE}/reserved_resources")
    assert rr.body == (
        b'{"cru":0,"mru":0,"hru":0,"sru":0,"network":0,"network_resource":0,"volume":0,'
        b'"zdb_namespace":0,"container":0,"k8s_vm":0,"proxy":1,"reverse_proxy":2,'
        b'"subdomain":3,"delegate_domain":4}\n'
    )
    for req in (up, rr):
        assert_signed(req)
        assert_plain_headers(req)
        assert "Content-Type" not in req.headers


async def test_poll_null_body_and_last_id_unsigned(explorer: Explorer) -> None:
    explorer.queue(reply(200, b"null\n", **{"X-Last-Id": "77"}), reply(200, b'[{"id":1}]\n'))
    c = client(explorer)
    first = await c.poll(0)
    second = await c.poll(78)
    await c.aclose()
    assert (first.items, first.last_id) == ([], 77)
    assert (second.items, second.last_id) == ([{"id": 1}], 0)
    assert [(r.method, r.target) for r in explorer.seen] == [
        ("GET", f"{WORKLOADS}?from=0"),
        ("GET", f"{WORKLOADS}?from=78"),
    ]
    for req in explorer.seen:
        assert req.body == b""
        assert "Authorization" not in req.headers
        assert "Threebot-Id" not in req.headers
        assert_plain_headers(req)


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'[{"id":1},', {"X-Last-Id": "5"}),  # truncated
        (b'{"id":1}', {"X-Last-Id": "5"}),  # not an array
        (b"[]", {"X-Last-Id": "five"}),  # bad header
        (b"[" * 100_000, {}),  # nested deeper than the JSON decoder recurses
    ],
)
async def test_poll_undecodable_is_not_retryable(
    explorer: Explorer, content: bytes, headers: dict[str, str]
) -> None:
    errors: list[str] = []
    explorer.queue(reply(200, content, **headers))
    c = client(explorer, on_error=errors.append)
    with pytest.raises(PollDecodeError) as info:
        await c.poll(3)
    await c.aclose()
    assert not info.value.retryable
    assert info.value.status == 200
    assert errors == ["poll"]


async def test_poll_declared_length_over_limit_is_refused_unread(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(explorer_module, "MAX_POLL_BODY", 1000)
    explorer.queue(reply(200, b"[" + b"1," * 600 + b"1]"))
    c = client(explorer)
    with pytest.raises(PollDecodeError, match="body of 1203 bytes is too large"):
        await c.poll(0)
    await c.aclose()


async def test_poll_endless_stream_is_cut_at_the_limit(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunked answer that never ends: the client stops reading past the limit and hangs up
    (the server's writes then fail), instead of buffering it all."""
    monkeypatch.setattr(explorer_module, "MAX_POLL_BODY", 100_000)
    hung_up = asyncio.Event()
    written = 0

    async def endless(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal written
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await response.write(b"[")
            while True:
                await response.write(b"0," * 8192)
                written += 16384
        except ConnectionError:
            pass
        finally:  # the write failed or, the client gone, the server cancelled the handler
            hung_up.set()
        return response

    explorer.queue(endless)
    c = client(explorer)
    with pytest.raises(PollDecodeError, match="more than 100000 bytes is too large"):
        await c.poll(0)
    await c.aclose()
    await asyncio.wait_for(hung_up.wait(), timeout=10)
    assert written < 64 * 1024 * 1024


async def test_poll_compressed_body_is_limited_after_decoding(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(explorer_module, "MAX_POLL_BODY", 100_000)
    bomb = gzip.compress(b"[" + b"0," * 1_000_000 + b"0]")
    assert len(bomb) < 100_000
    explorer.queue(reply(200, bomb, **{"Content-Encoding": "gzip"}))
    explorer.queue(reply(200, gzip.compress(b'[{"id":2}]\n'), **{"Content-Encoding": "gzip"}))
    c = client(explorer)
    with pytest.raises(PollDecodeError, match="too large"):
        await c.poll(0)
    assert (await c.poll(0)).items == [{"id": 2}]
    await c.aclose()


async def test_put_result_and_delete_paths(explorer: Explorer) -> None:
    explorer.queue(reply(201), reply(200))
    c = client(explorer)
    body = b'{"category":7,"workload_id":"4521-1","data_json":null}\n'
    await c.put_result("4521-1", body)
    await c.delete_workload("4521-1")
    await c.aclose()
    put, delete = explorer.seen
    assert (put.method, put.target, put.body) == ("PUT", f"{WORKLOADS}/4521-1", body)
    assert (delete.method, delete.target, delete.body) == ("DELETE", f"{WORKLOADS}/4521-1", b"")
    for req in (put, delete):
        assert_signed(req)
        assert_plain_headers(req)
        assert "Content-Type" not in req.headers


async def test_path_segments_are_escaped(explorer: Explorer) -> None:
    c = client(explorer)
    await c.delete_workload("../../gateways")
    await c.delete_workload("..")
    await c.aclose()
    assert [r.target for r in explorer.seen] == [
        f"{WORKLOADS}/..%2F..%2Fgateways",
        f"{WORKLOADS}/..",  # sent as built, not folded into the parent path
    ]


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False)],
)
async def test_status_codes_classified(explorer: Explorer, status: int, retryable: bool) -> None:
    errors: list[str] = []
    explorer.queue(reply(status, b'{"error":"boom here"}\n'))
    c = client(explorer, on_error=errors.append)
    with pytest.raises(ExplorerError, match="boom here") as info:
        await c.delete_workload("1-1")
    await c.aclose()
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert errors == ["delete"]


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"upstream exploded\n", "HTTP 502: upstream exploded"),
        (b"", "HTTP 404: Not Found"),
        (b'{"error": 7}', 'HTTP 400: {"error": 7}'),
        (b"x" * 5000, "HTTP 400: " + "x" * 200),
    ],
)
async def test_error_text_extraction(explorer: Explorer, body: bytes, text: str) -> None:
    status = int(text.split()[1].rstrip(":"))
    explorer.queue(reply(status, body))
    c = client(explorer)
    with pytest.raises(ExplorerError) as info:
        await c.update_uptime(1)
    await c.aclose()
    assert str(info.value) == f"POST {explorer.base}/gateways/{NODE}/uptime: {text}"


async def test_error_text_arriving_in_pieces(explorer: Explorer) -> None:
    async def split(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(status=503)
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"error":"maint')
        await asyncio.sleep(0.05)  # a slow link: the rest comes in a later segment
        await response.write(b'enance window"}\n')
        return response

    explorer.queue(split)
    c = client(explorer)
    with pytest.raises(ExplorerError, match=r"HTTP 503: maintenance window$") as info:
        await c.update_uptime(1)
    await c.aclose()
    assert info.value.retryable


async def test_wrong_success_code_is_an_error(explorer: Explorer) -> None:
    explorer.queue(reply(200))
    c = client(explorer)
    with pytest.raises(ExplorerError, match="HTTP 200"):
        await c.put_result("1-1", b"{}\n")  # PUT expects 201
    await c.aclose()


async def test_redirects_are_not_followed(explorer: Explorer) -> None:
    explorer.queue(reply(307, b"", Location=f"{explorer.base}/elsewhere"))
    c = client(explorer)
    with pytest.raises(ExplorerError, match="HTTP 307") as info:
        await c.put_result("1-1", b"{}\n")
    await c.aclose()
    assert not info.value.retryable
    assert [r.target for r in explorer.seen] == [f"{WORKLOADS}/1-1"]


async def test_transport_error_is_retryable() -> None:
    errors: list[str] = []
    c = ExplorerClient(
        f"http://127.0.0.1:{free_port()}", Identity(SEED), timeout=3, on_error=errors.append
    )
    with pytest.raises(ExplorerError, match="request failure") as info:
        await c.update_uptime(1)
    await c.aclose()
    assert info.value.retryable
    assert info.value.status is None
    assert errors == ["uptime"]


async def test_proxy_from_the_environment_is_used(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As httpx did (and Go's default transport): HTTP_PROXY/HTTPS_PROXY are honoured."""
    proxy = explorer.base.removesuffix("/api/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "")
    c = ExplorerClient("http://explorer.test/api/v1", Identity(SEED), timeout=3)
    await c.update_uptime(5)
    await c.aclose()
    (req,) = explorer.seen
    assert req.target == f"http://explorer.test/api/v1/gateways/{NODE}/uptime"
    assert req.headers["Host"] == "explorer.test"
    assert req.body == b'{"uptime":5}\n'
    assert_signed(req)


async def test_https_trusts_ssl_cert_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS with the trust store httpx used: SSL_CERT_FILE when set (else certifi's bundle)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = Explorer()
    runner = web.ServerRunner(web.Server(server.handle, handler_cancellation=True))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # Nix builders set one
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    try:
        untrusted = ExplorerClient(url, Identity(SEED), timeout=3)
        with pytest.raises(ExplorerError, match="request failure") as info:
            await untrusted.update_uptime(1)
        await untrusted.aclose()
        assert info.value.retryable
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        trusted = ExplorerClient(url, Identity(SEED), timeout=3)
        await trusted.update_uptime(2)
        await trusted.aclose()
    finally:
        await runner.cleanup()
    assert [r.body for r in server.seen] == [b'{"uptime":2}\n']


def test_unusable_ssl_cert_file_is_a_clear_start_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"SSL_CERT_FILE=.*missing\.pem: no usable CA"):
        ExplorerClient("https://explorer.grid.tf", Identity(SEED))
    # plain HTTP needs no trust store
    ExplorerClient("http://127.0.0.1:1", Identity(SEED))


async def never_answer(request: web.BaseRequest) -> web.StreamResponse:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def trickle(request: web.BaseRequest) -> web.StreamResponse:
    """Headers at once, then one body byte every 50 ms: each read is quick, the whole is not."""
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    await response.prepare(request)
    for _ in range(1000):
        await response.write(b" ")
        await asyncio.sleep(0.05)
    return response


@pytest.mark.parametrize("handler", [never_answer, trickle], ids=["no-answer", "slow-body"])
async def test_total_timeout_is_retryable(explorer: Explorer, handler: Handler) -> None:
    errors: list[str] = []
    explorer.queue(handler)
    c = client(explorer, timeout=0.5, on_error=errors.append)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ExplorerError, match=r"no complete answer within 0\.5 s") as info:
        await c.poll(0)
    elapsed = loop.time() - started
    await c.aclose()
    assert info.value.retryable
    assert errors == ["poll"]
    assert elapsed < 5  # bounded by the total timeout, not by the 50 s the body would take


async def test_concurrent_calls_share_a_bounded_keep_alive_pool(explorer: Explorer) -> None:
    async def slow_created(request: web.BaseRequest) -> web.StreamResponse:
        await asyncio.sleep(0.01)  # keep several requests in flight at once
        return web.Response(status=201, body=b"null\n")

    explorer.queue(*[slow_created] * 64)
    c = client(explorer, pool_size=4)
    for batch in range(4):
        await asyncio.gather(*(c.put_result(f"{batch}-{i}", b"{}\n") for i in range(16)))
    await c.aclose()
    assert len(explorer.seen) == 64
    assert len({r.peer for r in explorer.seen}) <= 4


async def test_closed_client_refuses_calls(explorer: Explorer) -> None:
    c = client(explorer)
    await c.update_uptime(1)
    await c.aclose()
    await c.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await c.update_uptime(1)
    assert len(explorer.seen) == 1


async def test_get_user(explorer: Explorer) -> None:
    explorer.queue(reply(200, b'{"id":42,"name":"alice.3bot","pubkey":"48075a59","x":1}'))
    c = client(explorer)
    user = await c.get_user(42)
    await c.aclose()
    assert user.pubkey == "48075a59"
    (req,) = explorer.seen
    assert (req.method, req.target, req.body) == ("GET", "/api/v1/users/42", b"")
    assert_signed(req)


@pytest.mark.parametrize("body", [b"not json", b'{"id":"x"}', b"[" * 5000])
async def test_get_user_malformed_is_not_retryable(explorer: Explorer, body: bytes) -> None:
    explorer.queue(reply(200, body))
    c = client(explorer)
    with pytest.raises(ExplorerError, match="user 42: malformed answer") as info:
        await c.get_user(42)
    await c.aclose()
    assert not info.value.retryable


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
