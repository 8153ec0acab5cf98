"""Result PUTs over lean HTTP/1.1 keep-alive connections (the result sender's child process).

The explorer has no batch endpoint, so a backlog is one `PUT` per result, and aiohttp's
per-request machinery (request and response objects, header multidicts, URL objects, a task
and several futures per call) was about 0.45 ms of CPU each (benchmarks/agent). This client
sends only that request, the way `ExplorerClient.put_result` sends it:

- the request is one pre-built byte string: the request line, `Host`, `User-Agent`, `Accept`,
  the signature headers (made once per second, as `sign_headers` makes them), `Content-Length`
  and the body as given (no `Content-Type`, as the Go client; spec §1);
- answers are parsed by httptools (llhttp, the parser of Node.js, in C) on a parser kept per
  connection: no object per answer, only the status, the framing and a bounded head of a
  failed answer's body are kept;
- `pool_size` keep-alive connections, requests beyond them wait in one queue; no task per
  request: a verdict is a callback.

Verdicts are those of `ExplorerClient.put_result`: 201 is acknowledged; another status is an
`HTTP <status>: <text>` error, retryable for 5xx, 408 and 429; a transport failure, a malformed
or oversized answer head, a connection closed before the answer was complete, and no complete
answer within the total `timeout` (queueing and connecting included) are retryable request
failures. A reused connection that the server closed before answering is retried once on a new
one, as aiohttp does for idempotent requests. Informational (1xx) answers are skipped, their
heads counted against the same head limit; a `101` is an error; bodies may be chunked or
delimited by the connection's close; an acknowledgement's body is read up to `MAX_BODY` and
the connection then abandoned.

Not for proxies: with HTTP(S)_PROXY set for the explorer the child uses `ExplorerClient`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from typing import Final, cast
from urllib.parse import quote, urlsplit

import httptools

from tfgateway.explorer.client import (
    DEFAULT_TIMEOUT,
    ERROR_HEAD,
    MAX_BODY,
    POOL_SIZE,
    USER_AGENT,
    ExplorerError,
    error_text,
    ssl_context,
)
from tfgateway.explorer.signatures import Signer, sign_headers

__all__ = ["MAX_HEAD", "PutClient", "Verdict"]

MAX_HEAD: Final = 64 * 1024
"""Largest answer head (status line and headers, 1xx answers before it included)."""

Verdict = Callable[[int, int, bool, str], None]
"""`(token, status, retryable, message)`: status 0 and no message when acknowledged, the HTTP
status of a refusal, -1 for a failure without one."""

_EXPECT: Final = 201


class _Put:
    """One request: its bytes, its caller's token and its deadline."""

    __slots__ = ("deadline", "gwid", "retried", "timer", "token", "wire")

    def __init__(self, token: int, gwid: str, wire: bytes, deadline: float) -> None:
        self.token = token
        self.gwid = gwid
        self.wire = wire
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None
        self.retried = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time, its parser kept for its life."""

    def __init__(self, client: PutClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.put: _Put | None = None
        self.answered = 0
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.final = False
        """The final (non-1xx) answer's headers are complete."""
        self.framed = False
        """The answer has a Content-Length or Transfer-Encoding (else: until the close)."""
        self.head = 0
        self.body = 0
        self.error_head: bytearray | None = None
        self.got_bytes = False
        self.complete = False
        self.keep_alive = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        put = self.put
        if put is None or self.complete:  # bytes nobody asked for: this connection is done
            self.close()
            return
        self.got_bytes = True
        if not self.final:
            self.head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(put, "the answer switches protocols (HTTP 101)")
            return
        except httptools.HttpParserError as exc:
            if self.complete:  # bytes after a complete answer: keep the verdict, drop the line
                self.close()
                self._deliver(put)
            else:
                self._fail(put, f"malformed answer: {exc}")
            return
        if self.complete:
            self._deliver(put)
        elif not self.final and self.head > MAX_HEAD:
            self._fail(put, f"answer head larger than {MAX_HEAD} bytes")
        elif self.error_head is not None and len(self.error_head) >= ERROR_HEAD:
            self.close()  # the status says enough; the rest of a long error is not read
            self._refused(put)
        elif self.body > MAX_BODY:
            self.close()  # an acknowledgement with a huge body: abandoned, not read
            self._settle(put, 0, False, "")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client._lost(self)
        put = self.put
        if put is None:
            return
        if self.complete or (self.final and not self.framed):  # delimited by the close
            self._deliver(put)
        elif not self.got_bytes and self.answered and not put.retried:
            # a kept-alive connection the server had closed: once more on a new one
            self.put = None
            put.retried = True
            self.client._submit(put)
        else:
            why = f": {exc}" if exc is not None else ""
            self._fail(put, f"connection closed before the answer was complete{why}")

    # -- httptools callbacks (inside feed_data: they only record)

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, _value: bytes) -> None:
        if not self.framed:
            lowered = name.lower()
            self.framed = lowered in (b"content-length", b"transfer-encoding")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # informational: skipped, the final answer follows
        self.status = status
        self.final = True
        if status != _EXPECT:
            self.error_head = bytearray()

    def on_body(self, chunk: bytes) -> None:
        error_head = self.error_head
        if error_head is None:
            self.body += len(chunk)
        elif len(error_head) < ERROR_HEAD:
            error_head += chunk[: ERROR_HEAD - len(error_head)]

    def on_message_complete(self) -> None:
        if not self.final:  # the end of a 1xx answer
            self.framed = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # here: the parser resets after it

    # -- the request

    def send(self, put: _Put) -> None:
        assert self.transport is not None
        self.put = put
        self._reset()
        self.transport.write(put.wire)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.client._lost(self)

    def expire(self, put: _Put) -> None:
        """The deadline passed with `put` on this connection."""
        if self.final and self.error_head is not None:
            self.close()
            self._refused(put)  # the status says enough; the text is a courtesy
            return
        self._fail(put, f"no complete answer within {self.client.timeout:g} s")

    def _deliver(self, put: _Put) -> None:
        keep = self.complete and not self.closed and self.keep_alive
        if self.error_head is not None:
            self._refused(put, release=keep)
        else:
            self._settle(put, 0, False, "", release=keep)
        if not keep:
            self.close()

    def _refused(self, put: _Put, *, release: bool = False) -> None:
        status = self.status
        text = error_text(status, self.reason.decode("latin-1"), bytes(self.error_head or b""))
        retryable = status >= 500 or status in (408, 429)
        message = f"{self.client.url(put.gwid)}: HTTP {status}: {text}"
        self._settle(put, status, retryable, message, release=release)

    def _fail(self, put: _Put, why: str) -> None:
        self.close()
        self._settle(put, -1, True, f"{self.client.url(put.gwid)}: request failure: {why}")

    def _settle(
        self, put: _Put, status: int, retryable: bool, message: str, *, release: bool = False
    ) -> None:
        if self.put is not put:
            return
        self.put = None
        self.answered += 1
        self.client._settle(put, status, retryable, message)
        if release:
            self.client._release(self)


class PutClient:
    """Result PUTs to one explorer over `pool_size` keep-alive connections.

    `put(token, gwid, body)` starts a request; `verdict(token, status, retryable, message)` is
    called once for it, from the event loop, never from inside `put`. `put_result` is the
    awaitable form (an `ExplorerError` as `ExplorerClient.put_result` raises it).
    """

    def __init__(
        self,
        base: str,
        identity: Signer,
        verdict: Verdict | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = POOL_SIZE,
    ) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"explorer URL {base!r}: not an http(s) URL with a host")
        self.base = base
        self.identity = identity
        self.timeout = float(timeout)
        self._verdict = verdict
        self._pool_size = max(1, pool_size)
        tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if tls else 80)
        self._ssl: ssl.SSLContext | None = ssl_context() if tls else None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.port is not None and parts.port != (443 if tls else 80):
            host += f":{parts.port}"
        node = quote(identity.node_id, safe="")
        self._prefix = f"PUT {parts.path}/reservations/nodes/{node}/workloads/".encode()
        self._url_prefix = f"PUT {base}/reservations/nodes/{node}/workloads/"
        self._fixed = f" HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n"
        self._signed_second = -1
        self._head = b""
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._queue: collections.deque[_Put] = collections.deque()
        self._futures: dict[int, asyncio.Future[tuple[int, bool, str]]] = {}
        self._tokens = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def url(self, gwid: str) -> str:
        """`PUT <url>` as the errors of `ExplorerClient` name it."""
        return self._url_prefix + quote(gwid, safe="")

    def _headers(self) -> bytes:
        """Everything after the request target but `Content-Length`; re-signed every second."""
        second = int(time.time())
        if second != self._signed_second:
            signed = "".join(f"{k}: {v}\r\n" for k, v in sign_headers(self.identity).items())
            self._head = (self._fixed + signed + "Content-Length: ").encode()
            self._signed_second = second
        return self._head

    def put(self, token: int, gwid: str, body: bytes) -> None:
        if self._closed:
            raise ExplorerError("explorer put client is closed", retryable=False)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        wire = b"".join(
            (
                self._prefix,
                quote(gwid, safe="").encode(),
                self._headers(),
                b"%d\r\n\r\n" % len(body),
                body,
            )
        )
        put = _Put(token, gwid, wire, loop.time() + self.timeout)
        put.timer = loop.call_at(put.deadline, self._expire, put)
        self._submit(put)

    async def put_result(self, gwid: str, body: bytes) -> None:
        """One PUT, awaited: None when acknowledged, else the ExplorerError (for a client made
        without a `verdict` callback)."""
        self._tokens += 1
        token = self._tokens
        future = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        try:
            self.put(token, gwid, body)
            status, retryable, message = await future
        finally:
            self._futures.pop(token, None)
        if message:
            raise ExplorerError(message, status=status if status > 0 else None, retryable=retryable)

    def _submit(self, put: _Put) -> None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                conn.send(put)
                return
        if len(self._open) + self._connecting < self._pool_size:
            self._connect(put)
        else:
            self._queue.append(put)

    def _connect(self, put: _Put) -> None:
        assert self._loop is not None
        self._connecting += 1
        self._loop.create_task(self._connect_then_send(put))

    async def _connect_then_send(self, put: _Put) -> None:
        assert self._loop is not None
        try:
            try:
                async with asyncio.timeout_at(put.deadline):
                    _, conn = await self._loop.create_connection(
                        lambda: _Connection(self),
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl is not None else None,
                    )
            finally:
                self._connecting -= 1
        except Exception as exc:  # OSError, ssl.SSLError, TimeoutError, a bad address
            if isinstance(exc, TimeoutError):
                why = f"no complete answer within {self.timeout:g} s"
            else:
                why = f"cannot connect to {self._host}:{self._port}: {exc}"
            self._settle(put, -1, True, f"{self.url(put.gwid)}: request failure: {why}")
            self._next()
            return
        self._open.add(conn)
        if self._closed:
            conn.close()
            self._settle(put, -1, True, f"{self.url(put.gwid)}: request failure: client closed")
        elif put.timer is None:  # its deadline passed while connecting: another may use it
            self._settle(put, -1, True, self._timeout_message(put))
            self._release(conn)
        else:
            conn.send(put)

    def _expire(self, put: _Put) -> None:
        put.timer = None
        for conn in self._open:
            if conn.put is put:
                conn.expire(put)
                return
        try:
            self._queue.remove(put)
        except ValueError:
            return  # connecting: the connection task settles it
        self._settle(put, -1, True, self._timeout_message(put))

    def _timeout_message(self, put: _Put) -> str:
        return (
            f"{self.url(put.gwid)}: request failure: no complete answer within {self.timeout:g} s"
        )

    def _settle(self, put: _Put, status: int, retryable: bool, message: str) -> None:
        if put.timer is not None:
            put.timer.cancel()
            put.timer = None
        if self._verdict is not None:
            self._verdict(put.token, status, retryable, message)
            return
        future = self._futures.get(put.token)
        if future is not None and not future.done():
            future.set_result((status, retryable, message))

    def _release(self, conn: _Connection) -> None:
        """`conn` finished an answer and is kept alive: the next queued request, else idle."""
        if conn.closed:
            return
        if self._queue:
            conn.send(self._queue.popleft())
        else:
            self._idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        self._open.discard(conn)
        self._next()

    def _next(self) -> None:
        """A connection slot freed: open one for the first queued request."""
        free = len(self._open) + self._connecting < self._pool_size
        if self._queue and free and not self._closed:
            self._connect(self._queue.popleft())

    async def aclose(self) -> None:
        """Close every connection; requests still in flight fail as retryable."""
        self._closed = True
        queued, self._queue = list(self._queue), collections.deque()
        for put in queued:
            self._settle(put, -1, True, f"{self.url(put.gwid)}: request failure: client closed")
        for conn in list(self._open):
            conn.close()
            if conn.put is not None:
                conn._fail(conn.put, "client closed")
        self._idle.clear()
