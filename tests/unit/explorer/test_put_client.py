"""The result sender's lean HTTP/1.1 client (explorer/put_client.py) against real sockets: the
request the explorer sees is `ExplorerClient.put_result`'s, its verdicts are the same, its
connections are kept alive and bounded, and a hostile or broken server (garbage, huge heads,
silence, closes, chunked bodies, 1xx answers) gives a clear error within the timeout, never a
hang."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from tests.support.processes import free_port
from tests.unit.explorer.test_client import (
    NODE,
    SEED,
    WORKLOADS,
    Explorer,
    assert_plain_headers,
    assert_signed,
    client,
    explorer,
    reply,
)
from tfgateway.explorer.client import ExplorerError
from tfgateway.explorer.put_client import MAX_HEAD, PutClient
from tfgateway.node.identity import Identity

__all__ = ["explorer"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(30)

BODY = b'{"category":7,"workload_id":"4521-1","data_json":null}\n'


def lean(base: str, timeout: float = 3.0, pool_size: int = 32) -> PutClient:
    return PutClient(base, Identity(SEED), timeout=timeout, pool_size=pool_size)


@contextlib.asynccontextmanager
async def leaned(base: str, pool_size: int = 32) -> AsyncIterator[PutClient]:
    """`lean`'s client, closed when the block ends."""
    c = lean(base, pool_size=pool_size)
    try:
        yield c
    finally:
        await c.aclose()


async def test_the_explorer_sees_the_aiohttp_clients_request(explorer: Explorer) -> None:
    explorer.queue(reply(201), reply(201))
    c, old = lean(explorer.base), client(explorer)
    try:
        await c.put_result("4521-1", BODY)
        await old.put_result("4521-1", BODY)
    finally:
        await c.aclose()
        await old.aclose()
    put, before = explorer.seen
    assert (put.method, put.target, put.body) == ("PUT", f"{WORKLOADS}/4521-1", BODY)
    assert (put.method, put.target, put.body) == (before.method, before.target, before.body)
    assert_signed(put)
    assert_plain_headers(put)  # no Content-Type, as the Go client
    for name in ("Host", "User-Agent", "Content-Length", "Threebot-Id", "Date"):
        assert put.headers[name] == before.headers[name]


async def test_path_segments_are_escaped(explorer: Explorer) -> None:
    explorer.queue(reply(201))
    async with leaned(explorer.base) as c:
        await c.put_result("a/b c?", b"{}\n")
    assert [r.target for r in explorer.seen] == [f"{WORKLOADS}/a%2Fb%20c%3F"]


@pytest.mark.parametrize(
    "answer",
    [
        reply(503, b'{"error": "maintenance window"}'),
        reply(500, b"upstream exploded\n"),
        reply(429, b""),
        reply(408, b"x" * 5000),
        reply(400, b'{"error":"bad"}'),
        reply(404, b""),
        reply(200),  # the wrong success code
        reply(307, b"", Location="/elsewhere"),  # not followed
    ],
)
async def test_refusals_are_the_aiohttp_clients(
    explorer: Explorer, answer: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
) -> None:
    explorer.queue(answer, answer)
    got = []
    c, old = lean(explorer.base), client(explorer)
    try:
        for sent_by in (c, old):
            with pytest.raises(ExplorerError) as info:
                await sent_by.put_result("1-1", b"{}\n")
            got.append((str(info.value), info.value.status, info.value.retryable))
    finally:
        await c.aclose()
        await old.aclose()
    assert got[0] == got[1]
    assert len(explorer.seen) == 2


async def test_connections_are_kept_alive_and_bounded(explorer: Explorer) -> None:
    async def slow_created(request: web.BaseRequest) -> web.StreamResponse:
        await asyncio.sleep(0.01)  # keep several requests in flight at once
        return web.Response(status=201, body=b"null\n")

    explorer.queue(*[slow_created] * 74)
    async with leaned(explorer.base, pool_size=4) as c:
        for batch in range(4):
            await asyncio.gather(*(c.put_result(f"{batch}-{i}", b"{}\n") for i in range(16)))
        for i in range(10):
            await c.put_result(f"9-{i}", b"{}\n")
    assert len(explorer.seen) == 74
    assert len({r.peer for r in explorer.seen}) <= 4
    assert len({r.peer for r in explorer.seen[64:]}) == 1  # one at a time: one connection


async def test_unreachable_explorer_is_retryable_without_a_status() -> None:
    async with leaned(f"http://127.0.0.1:{free_port()}/api/v1") as c:
        with pytest.raises(ExplorerError, match="request failure: cannot connect") as info:
            await c.put_result("1-1", b"{}\n")
    assert info.value.retryable
    assert info.value.status is None


# -- a raw socket server: each connection answers with a script ---------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body), as bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


class Raw:
    """A TCP server whose n-th connection runs the n-th script (the last one repeats)."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.connections = 0
        self.base = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        # the client hung up, or the test is over
        with contextlib.suppress(
            ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError
        ):
            await script(reader, writer)
        writer.close()


@contextlib.asynccontextmanager
async def raw_server(*scripts: Script) -> AsyncIterator[Raw]:
    raw = Raw(*scripts)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw.base = f"http://127.0.0.1:{port}/api/v1"
    try:
        yield raw
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()


def answers(*chunks: bytes, then: str = "close", log: list[bytes] | None = None) -> Script:
    """Read a request, send `chunks` (one write each), then close or keep serving."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if log is not None:
                log.append(request)
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
            if then == "close":
                return
            if then == "hang":
                await asyncio.Event().wait()

    return script


CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nnull\n"


async def put_fails(base: str, match: str, limit: float = 3.0) -> ExplorerError:
    c = lean(base, timeout=limit)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ExplorerError, match=match) as info:
            await c.put_result("1-1", b"{}\n")
    finally:
        await c.aclose()
    assert loop.time() - started < limit + 2  # bounded, never a hang
    return info.value


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        ((b"SMTP ready\r\n\r\n",), r"request failure: malformed answer"),
        ((b"HTTP/1.1 2x1 Created\r\n\r\n",), r"request failure: malformed answer"),
        (
            (b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nnull\n",),
            r"request failure: malformed answer",
        ),
        (
            (b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\nnull\n",),
            r"request failure: connection closed before the answer was complete",
        ),
        ((b"",), r"request failure: connection closed before the answer was complete"),
        (
            (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",),
            r"request failure: the answer switches protocols \(HTTP 101\)",
        ),
    ],
    ids=[
        "not-http",
        "garbage-status",
        "two-lengths",
        "closed-mid-body",
        "closed-at-once",
        "upgrade",
    ],
)
async def test_broken_answers_are_retryable_request_failures(
    chunks: tuple[bytes, ...], match: str
) -> None:
    async with raw_server(answers(*chunks)) as raw:
        error = await put_fails(raw.base, match)
    assert error.retryable
    assert error.status is None
    assert str(error).startswith(f"PUT {raw.base}/reservations/nodes/{NODE}/workloads/1-1: ")


async def test_an_endless_head_is_cut_at_the_limit() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\n")
        for i in range(100_000):  # bounded: the client hangs up long before
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000))
            await writer.drain()

    async with raw_server(endless) as raw:
        error = await put_fails(raw.base, rf"answer head larger than {MAX_HEAD} bytes")
    assert error.retryable


async def test_endless_informational_answers_are_cut_at_the_head_limit() -> None:
    async def continues(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for _ in range(100_000):
            writer.write(b"HTTP/1.1 100 Continue\r\nX-Filler: " + b"y" * 1000 + b"\r\n\r\n")
            await writer.drain()

    async with raw_server(continues) as raw:
        await put_fails(raw.base, rf"answer head larger than {MAX_HEAD} bytes")


@pytest.mark.parametrize("first", [b"", b"HTTP/1.1 201 Cre"], ids=["silence", "half-a-line"])
async def test_a_silent_or_slow_server_times_out(first: bytes) -> None:
    async with raw_server(answers(first, then="hang")) as raw:
        error = await put_fails(raw.base, r"request failure: no complete answer within 0\.5 s", 0.5)
    assert error.retryable


async def test_a_refusal_whose_body_stalls_is_still_its_status() -> None:
    head = b'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000\r\n\r\n{"error":'
    async with raw_server(answers(head, then="hang")) as raw:
        error = await put_fails(raw.base, r"HTTP 503: \{\"error\":$", 0.5)
    assert (error.status, error.retryable) == (503, True)


async def test_chunked_bodies_informational_answers_and_keep_alive() -> None:
    chunked_created = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nnu\r\n3\r\nll\n\r\n0\r\n\r\n"
    )
    refusal = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_created)
        await read_request(reader)
        writer.write(refusal + b'8\r\n{"error"\r\n')
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest in a later segment
        writer.write(b'10\r\n:"maintenance"}\n\r\n0\r\n\r\n')
        await read_request(reader)
        writer.write(CREATED)
        await read_request(reader)

    async with raw_server(script) as raw, leaned(raw.base) as c:
        await c.put_result("1-1", b"{}\n")
        with pytest.raises(ExplorerError, match=r"HTTP 503: maintenance$") as info:
            await c.put_result("1-2", b"{}\n")
        await c.put_result("1-3", b"{}\n")
    assert info.value.retryable
    assert raw.connections == 1  # every answer complete: one connection for all three


async def test_a_body_delimited_by_the_close_is_complete() -> None:
    async with (
        raw_server(answers(b"HTTP/1.0 201 Created\r\n\r\nnull\n")) as raw,
        leaned(raw.base) as c,
    ):
        await c.put_result("1-1", b"{}\n")
        await c.put_result("1-2", b"{}\n")
    assert raw.connections == 2


async def test_a_huge_acknowledgement_is_abandoned_not_read() -> None:
    huge = b"HTTP/1.1 201 Created\r\nContent-Length: 100000000\r\n\r\n" + b" " * (2 << 20)
    async with raw_server(answers(huge, then="hang")) as raw, leaned(raw.base) as c:
        await c.put_result("1-1", b"{}\n")


async def test_a_kept_alive_connection_closed_by_the_server_is_retried_once() -> None:
    seen: list[bytes] = []

    async def answers_one_then_drops(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        seen.append(await read_request(reader))
        writer.write(CREATED)
        seen.append(await read_request(reader))  # read, then dropped without an answer

    async with (
        raw_server(answers_one_then_drops, answers(CREATED, log=seen)) as raw,
        leaned(raw.base) as c,
    ):
        await c.put_result("1-1", b"{}\n")
        await c.put_result("1-2", b"{}\n")
    assert [r.split(b" ", 2)[1].rsplit(b"/", 1)[1] for r in seen] == [b"1-1", b"1-2", b"1-2"]
    assert raw.connections == 2


async def test_a_new_connection_closed_before_answering_is_not_retried() -> None:
    seen: list[bytes] = []
    async with raw_server(answers(log=seen)) as raw:
        await put_fails(raw.base, "connection closed before the answer was complete")
    assert raw.connections == 1
    assert len(seen) == 1


async def test_connection_close_is_honoured() -> None:
    closing = b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 5\r\n\r\nnull\n"
    async with raw_server(answers(closing, then="hang")) as raw, leaned(raw.base) as c:
        await c.put_result("1-1", b"{}\n")
        await c.put_result("1-2", b"{}\n")  # the first connection is not reused
    assert raw.connections == 2


async def test_verdicts_come_by_callback_never_from_inside_put() -> None:
    got: list[tuple[int, int, bool, str]] = []
    done = asyncio.Event()

    def verdict(token: int, status: int, retryable: bool, message: str) -> None:
        got.append((token, status, retryable, message))
        if len(got) == 3:
            done.set()

    async with raw_server(answers(CREATED, then="serve")) as raw:
        c = PutClient(raw.base, Identity(SEED), verdict, timeout=3.0, pool_size=2)
        try:
            for token in (7, 8, 9):
                c.put(token, f"{token}-1", b"{}\n")
            assert got == []
            async with asyncio.timeout(5):
                await done.wait()
        finally:
            await c.aclose()
    assert sorted(got) == [(7, 0, False, ""), (8, 0, False, ""), (9, 0, False, "")]


def test_only_http_urls_with_a_host() -> None:
    with pytest.raises(ValueError, match="not an http"):
        PutClient("ftp://h/api/v1", Identity(SEED))
