"""The development explorer's HTTP/1.1 server: httptools (llhttp, in C) under the event loop.

It replaced aiohttp's server (devx19): the explorer shares two cores with the gateway it serves,
and aiohttp's request handling (protocol, router, middleware, request and response objects) was
a third of its CPU in a run of 50,000 workloads. This one parses with llhttp, hands each
request, complete with its body, to one synchronous `respond` call (a coroutine only when a
fault delays the answer) and writes each answer with one `write` of bytes.

The answers are byte for byte the ones aiohttp's server gave (status line, headers in the same
order, `Content-Length`, `Date`, `Server`, `Connection` by the same rules, HEAD without a body;
tests/integration/devexplorer/test_http_bytes.py compares them with aiohttp's). Per
connection: requests are answered in order (pipelining), keep-alive as HTTP/1.1 and 1.0 define
it, a head larger than `MAX_HEAD` or a body larger than `MAX_BODY` is refused (431, 413) and
the connection closed, a request llhttp cannot parse gets a 400 naming the problem, and a
connection without a request for `IDLE_TIMEOUT` seconds is closed (aiohttp's keep-alive
timeout).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import httptools
from aiohttp.http import SERVER_SOFTWARE

log = logging.getLogger("tfgateway_devexplorer")

MAX_HEAD = 64 * 1024  # request line + headers
MAX_BODY = 16 * 1024 * 1024  # aiohttp's client_max_size of the explorer before
IDLE_TIMEOUT = 75.0  # aiohttp's keep-alive timeout
_SWEEP_EVERY = 15.0
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_SERVER = f"\r\nServer: {SERVER_SOFTWARE}".encode()


class Answer:
    """One HTTP answer: status, headers in order (`Content-Type` among them), body.

    `Content-Length`, `Date`, `Server` and `Connection` are added when it is written. Answers
    that never change (`null` with 200 or 201) are built once and keep their encoded head."""

    __slots__ = ("_heads", "body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()):
        self.status = status
        self.body = body
        self.headers = tuple(headers)
        self._heads: dict[tuple[str, bool], bytes] = {}

    def head(self, version: str, head_only: bool) -> bytes:
        """Status line and headers up to `Content-Length` (without the line end)."""
        key = (version, head_only)
        cached = self._heads.get(key)
        if cached is None:
            lines = [f"HTTP/{version} {self.status} {_REASONS.get(self.status, '')}"]
            lines += [f"{name}: {value}" for name, value in self.headers]
            if not (self.status < 200 or self.status in (204, 304)):
                lines.append(f"Content-Length: {len(self.body)}")
            cached = self._heads[key] = "\r\n".join(lines).encode("latin-1")
        return cached


class Drop:
    """Close the connection with no answer (faults `down`, `drop_*`)."""


DROP = Drop()
Result = Answer | Drop
Responder = Callable[["Request"], "Result | Awaitable[Result]"]


class Request:
    """One complete request (its body read)."""

    __slots__ = (
        "_raw_headers",
        "body",
        "fault",
        "keep_alive",
        "match_info",
        "method",
        "path",
        "path_qs",
        "query_string",
        "route",
        "transport",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        version: str,
        keep_alive: bool,
        transport: asyncio.Transport | None,
    ) -> None:
        self.method = method
        self.path_qs = target.partition("#")[0]
        raw_path, _, self.query_string = self.path_qs.partition("?")
        self.path = unquote(raw_path) if "%" in raw_path else raw_path
        self._raw_headers = headers
        self.body = body
        self.version = version
        self.keep_alive = keep_alive
        self.transport = transport
        self.match_info: dict[str, str] = {}
        self.route: str | None = None  # the matched route's name, set by the router
        self.fault: Any = None  # what the application decided for it (the explorer's faults)

    @property
    def query(self) -> dict[str, list[str]]:
        """The query's values by name, in order (as aiohttp's `request.query.getall`)."""
        out: dict[str, list[str]] = {}
        for name, value in parse_qsl(self.query_string, keep_blank_values=True):
            out.setdefault(name, []).append(value)
        return out

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers in order, as sent (Latin-1: what HTTP/1.1 allows byte for byte).
        Decoded when asked for: only the signed routes and Host need them."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw_headers]

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def host(self) -> str:
        """The Host header, else this machine's name (as aiohttp's `request.host`)."""
        host = self.header("Host")
        return host if host is not None else socket.getfqdn()


_DATE: list[Any] = [0, b""]


def _date() -> bytes:
    """`Date` as aiohttp writes it (RFC 822, GMT), formatted once a second."""
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[0], _DATE[1] = now, f"\r\nDate: {formatdate(now, usegmt=True)}".encode()
    return _DATE[1]  # type: ignore[no-any-return]


def encode_answer(answer: Answer, version: str, keep_alive: bool, head_only: bool) -> bytes:
    """The bytes aiohttp's server wrote for this answer to a request of `version`."""
    if keep_alive:
        connection = b"\r\nConnection: keep-alive" if version == "1.0" else b""
    else:
        connection = b"\r\nConnection: close" if version == "1.1" else b""
    body = b"" if head_only or answer.status in (204, 304) else answer.body
    return b"".join(
        (answer.head(version, head_only), _date(), _SERVER, connection, b"\r\n\r\n", body)
    )


def _plain(status: int, text: str) -> Answer:
    return Answer(status, text.encode(), (("Content-Type", "text/plain; charset=utf-8"),))


class _Connection(asyncio.Protocol):
    """One client connection: parse, answer in order, keep alive or close."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | Answer] = deque()
        self.busy = False  # an answer is being delayed (a fault): later requests wait
        self.closing = False
        self.last_active = time.monotonic()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's: no subclass of it
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.queue.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(_plain(400, "400 Bad Request: protocol upgrades are not supported\n"))
        except httptools.HttpParserCallbackError:
            if not self.closing:  # not a limit hit in a callback (its refusal is queued)
                log.exception("unexpected error answering a request")
                self._refuse(_plain(500, "500 Internal Server Error\n"))
        except httptools.HttpParserError as exc:
            self._refuse(_plain(400, f"400 Bad Request: {exc}\n"))

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0
        self._length = 0
        self._expect = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)
        if self._size > MAX_HEAD:
            self._grow(0, MAX_HEAD, 431, "request line and headers")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        if self._size > MAX_HEAD:
            self._grow(0, MAX_HEAD, 431, "request line and headers")
        if len(name) in (6, 14):  # what the head itself asks for
            lower = name.lower()
            if lower == b"content-length" and value.isdigit():
                self._length = int(value)
            elif lower == b"expect" and value.lower() == b"100-continue":
                self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._size = 0
        if self._length > MAX_BODY:
            self._grow(self._length, MAX_BODY, 413, "request body")
        if self._expect and self.parser.get_http_version() == "1.1" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            self._grow(0, MAX_BODY, 413, "request body")
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        request = Request(
            parser.get_method().decode("latin-1"),
            self._url.decode("latin-1"),
            self._headers,
            b"".join(self._body),
            parser.get_http_version(),
            parser.should_keep_alive(),
            self.transport,
        )
        self.last_active = time.monotonic()
        if self.transport is None or self.transport.is_closing():
            return  # after a request that closes the connection: not handled
        if self.busy or self.queue:  # answers go out in order: after those before it
            self.queue.append(request)
            return
        result = self.server.respond(request)  # the usual case: answered right away
        if isinstance(result, Answer | Drop):
            self._send(request, result)
        else:
            self._delay(request, result)

    def _grow(self, n: int, limit: int, status: int, what: str) -> None:
        self._size += n
        if self._size > limit:
            reason = _REASONS[status]
            self._refuse(_plain(status, f"{status} {reason}: {what} over {limit} bytes\n"))
            raise OverflowError(what)  # stops the parser: feed_data raises its callback error

    # -- answering

    def _refuse(self, answer: Answer) -> None:
        """Answer `answer` after the requests before it, then close; read nothing more."""
        if self.closing:
            return
        self.closing = True
        self.queue.append(answer)
        if self.transport is not None:
            self.transport.pause_reading()
        if not self.busy:
            self._answer_queued()

    def _answer_queued(self) -> None:
        while self.queue and self.transport is not None:
            item = self.queue.popleft()
            if isinstance(item, Answer):  # a refusal: the last thing this connection says
                self.transport.write(encode_answer(item, "1.1", False, False))
                self.transport.close()
                return
            result = self.server.respond(item)
            if isinstance(result, Answer | Drop):
                self._send(item, result)
                continue
            self._delay(item, result)
            return

    def _delay(self, request: Request, result: Awaitable[Result]) -> None:
        """An answer a fault delays: later requests wait for it."""
        self.busy = True
        task = asyncio.ensure_future(result)
        self.server.tasks.add(task)
        task.add_done_callback(functools.partial(self._delayed_done, request=request))

    def _delayed_done(self, task: asyncio.Future[Result], *, request: Request) -> None:
        self.server.tasks.discard(task)
        self.busy = False
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("unexpected error on %s %s: %r", request.method, request.path, exc)
            return
        self._send(request, task.result())
        self._answer_queued()

    def _send(self, request: Request, result: Result) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self.queue.clear()
            return
        if isinstance(result, Drop):
            self.queue.clear()
            transport.abort()
            return
        keep_alive = request.keep_alive and not self.closing
        head_only = request.method == "HEAD"
        transport.write(encode_answer(result, request.version, keep_alive, head_only))
        self.last_active = time.monotonic()
        if not keep_alive and not (self.closing and self.queue):
            self.queue.clear()
            transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HTTPServer:
    """Listeners and connections of one `respond` function."""

    def __init__(self, respond: Responder, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.respond = respond
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Future[Result]] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.TimerHandle | None = None

    def _protocol(self) -> _Connection:
        return _Connection(self)

    async def listen(self, host: str, port: int) -> int:
        """Listen on host:port; returns the port (the one chosen for port 0)."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(self._protocol, host, port, reuse_address=True)
        self.listeners.append(listener)
        self._sweep_later()
        sockets = listener.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def listen_on(self, sock: socket.socket) -> None:
        """Listen on a bound socket (the ones made inside other network namespaces)."""
        loop = asyncio.get_running_loop()
        self.listeners.append(await loop.create_server(self._protocol, sock=sock))

    def stop_listening(self) -> None:
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener.close()

    def close_connections(self) -> None:
        for connection in list(self.connections):
            connection.close()

    async def close(self) -> None:
        """Stop listening, close every connection, cancel the delayed answers."""
        self.stop_listening()
        self.close_connections()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _sweep_later(self) -> None:
        if self._sweeper is None:
            every = min(_SWEEP_EVERY, self.idle_timeout / 2)
            self._sweeper = asyncio.get_running_loop().call_later(every, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for `idle_timeout` (nothing held for dead clients)."""
        self._sweeper = None
        deadline = time.monotonic() - self.idle_timeout
        for connection in list(self.connections):
            if not connection.busy and connection.last_active < deadline:
                connection.close()
        self._sweep_later()
