"""The development explorer's HTTP/1.1 server (`http11`) on hostile input: bad requests, heads
and bodies over the limits, idle connections; each with a real socket on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.devexplorer import wait_until_async
from tfgateway_devexplorer import http11
from tfgateway_devexplorer.http11 import Answer, HTTPServer, Request
from tfgateway_devexplorer.server import DevExplorer

OK = Answer(200, b"ok\n", (("Content-Type", "text/plain"),))


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection."""
    return await asyncio.wait_for(reader.read(), 10)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[HTTPServer, int]]:
    """A server answering each request with its method, path and body length."""

    def respond(request: Request) -> Answer:
        text = f"{request.method} {request.path_qs} {len(request.body)}\n".encode()
        return Answer(200, text, (("Content-Type", "text/plain"),))

    server = HTTPServer(respond, idle_timeout=0.5)
    port = await server.listen("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.close()


async def test_a_request_llhttp_cannot_parse_is_a_400_naming_it_then_closed(
    explorer: DevExplorer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", explorer.port)
    writer.write(b"GET /dev/health HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
    answer = await read_all(reader)
    writer.close()
    first, _, second = answer.partition(b"HTTP/1.1 400 Bad Request\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")  # the good request before it: answered
    assert b"Connection: close\r\n" in second
    assert second.endswith(b"\r\n\r\n400 Bad Request: Invalid method encountered\n")


async def test_a_head_over_the_limit_is_431_and_the_connection_closed(
    echo: tuple[HTTPServer, int],
) -> None:
    _, port = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\n")
    for i in range(http11.MAX_HEAD // 1000 + 1):
        writer.write(f"X-Filler-{i}: {'a' * 1000}\r\n".encode())
    answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(b"request line and headers over 65536 bytes\n")


async def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(
    echo: tuple[HTTPServer, int],
) -> None:
    _, port = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = http11.MAX_BODY + 1
    writer.write(f"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
    answer = await read_all(reader)  # no byte of the body sent: refused on the head alone
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert answer.endswith(b"request body over 16777216 bytes\n")


async def test_a_chunked_body_over_the_limit_is_refused_and_not_kept(
    echo: tuple[HTTPServer, int],
) -> None:
    server, port = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"a" * (1 << 20))

    async def send_too_much() -> None:
        for _ in range(http11.MAX_BODY // (1 << 20) + 64):
            writer.write(chunk)
            await writer.drain()

    with pytest.raises(ConnectionError):  # the server stops reading and closes
        await send_too_much()
    try:
        answer = await read_all(reader)
    except ConnectionError:  # closed with the client's bytes unread: a reset may beat it
        answer = b""
    writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")

    async def dropped() -> bool:
        return not server.connections

    await wait_until_async(dropped, timeout=10, what="the connection dropped by the server")


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    echo: tuple[HTTPServer, int],
) -> None:
    _, port = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"PUT /b?c=d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
        b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = await read_all(reader)
    writer.close()
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"GET /a 0\n", b"PUT /b?c=d 3\n", b"GET /e 0\n"]


async def test_an_idle_connection_is_closed(echo: tuple[HTTPServer, int]) -> None:
    server, port = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"GET /a 0\n")).startswith(b"HTTP/1.1 200 OK")
    _, half_writer = await asyncio.open_connection("127.0.0.1", port)
    half_writer.write(b"GET /half-a-head HTTP/1.1\r\n")  # and never the rest

    async def closed() -> bool:
        return not server.connections

    await wait_until_async(closed, timeout=10, what="idle connections closed")
    assert await read_all(reader) == b""
    writer.close()
    half_writer.close()
