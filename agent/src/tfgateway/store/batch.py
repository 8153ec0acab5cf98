"""Auto-pipelining: the redis commands that coroutines issue in the same turn of the event
loop go to redis as one pipeline.

Why: the engine runs the jobs of a poll page concurrently, each a short straight-line
coroutine (read the cache, check and write the DNS or proxy entry, cache the result, queue
it for the explorer). Sent one by one, 5,000 workloads cost ≈ 25,000 round trips, and on a
small machine every round trip is a send and a receive system call on both sides plus a
context switch. Batched, the same work is a few round trips per page, while each job's code
stays a plain sequence of awaits (no hand-made batching in the primitives).

Only single commands are batched, never WATCH/MULTI (connection state): atomic
check-and-set goes through Lua scripts (`LuaScript`, `redistxn`), which redis runs one at a
time, so commands of different jobs never interleave inside one.

One pipeline is in flight at a time: commands issued meanwhile wait for the next one, which
is what makes batches grow under load (as Nagle's algorithm does) while an isolated command
goes out at once. A failed pipeline (connection lost) fails exactly the commands it carried.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import hiredis
import redis.asyncio
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["AutoPipeline", "LuaScript", "as_batch"]

MAX_BATCH: Final = 1000
"""Commands per pipeline; a larger backlog goes out as several pipelines in a row."""

DEFAULT_TIMEOUT: Final = 10.0

Arg = bytes | str | int | float


@dataclass(frozen=True)
class LuaScript:
    """A Lua script run with EVALSHA (loaded into redis the first time it is missing)."""

    source: str

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode("utf-8")).hexdigest()  # noqa: S324 (redis' id)


class AutoPipeline:
    """Coalesces concurrent single commands into pipelines on one redis client."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        max_batch: int = MAX_BATCH,
        timeout: float | None = None,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        configured = client.connection_pool.connection_kwargs.get("socket_timeout")
        self.timeout: float = timeout or configured or DEFAULT_TIMEOUT
        """Seconds one pipeline may take, sending and reading (the client's socket timeout)."""
        self._queue: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]] = []
        self._flushing = False
        self.pipelines = 0
        """How many pipelines were sent (tests and benchmarks look at batching with it)."""
        self.commands = 0

    def execute(self, *args: Arg) -> Awaitable[Any]:
        """Run one command in the next pipeline; awaited, its raw reply (RESP3 as hiredis
        decodes it: bytes, int, list, dict for maps; no redis-py response callbacks), or its
        error raised there. The future itself, not a coroutine around it: every frame between
        a job and the future is resumed again when the reply arrives."""
        return self.submit(*args)

    def submit(self, *args: Arg) -> asyncio.Future[Any]:
        """Queue one command for the next pipeline; the future gets its reply. Several
        commands can be submitted and awaited together without a task each."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._start_flush)
        return future

    def _start_flush(self) -> None:
        asyncio.get_running_loop().create_task(self._flush(), name="redis-autopipeline")

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._send(batch)
        finally:
            self._flushing = False
            if self._queue:  # queued while the last send was finishing up
                self._flushing = True
                asyncio.get_running_loop().call_soon(self._start_flush)

    async def _send(self, batch: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]]) -> None:
        live = [(args, future) for args, future in batch if not future.cancelled()]
        if not live:
            return
        self.pipelines += 1
        self.commands += len(live)
        try:
            replies = await self._round_trip([args for args, _ in live])
        except asyncio.CancelledError:
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every command of it failed
            for _, future in live:
                if not future.done():
                    # one exception object each (a shared one would grow a traceback per raise)
                    error = RedisConnectionError(f"redis pipeline failed: {exc}")
                    error.__cause__ = exc
                    future.set_exception(error)
            return
        for (_, future), reply in zip(live, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _round_trip(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Write every command at once (packed by hiredis, in C: redis-py's packer cost more
        than everything else the agent does per command) and read the replies in order; an
        error reply is returned as its exception, in its place."""
        pool = self.client.connection_pool
        # One deadline for the whole round trip (connecting, with its handshake, included)
        # rather than one per reply.
        async with asyncio.timeout(self.timeout):
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                packed = [hiredis.pack_command(args) for args in commands]  # type: ignore[arg-type]
                await conn.send_packed_command(packed)
                parser = getattr(conn, "_parser", None)
                if type(parser) is _AsyncHiredisParser and parser._reader is not None:
                    return await _read_replies(parser, len(commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        replies.append(exc)
                return replies
            except BaseException:
                await conn.disconnect()  # replies may be left unread on it
                raise
            finally:
                await pool.release(conn)

    # -- the commands the agent uses, typed ------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.execute("GET", key)
        return value

    async def hget(self, key: str, field: str) -> bytes | None:
        value: bytes | None = await self.execute("HGET", key, field)
        return value

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self.execute("HMGET", key, *fields)
        return values

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        values = await self.execute("HGETALL", key)
        if isinstance(values, list):  # a RESP2 connection: field, value, field, value, ...
            return dict(zip(values[::2], values[1::2], strict=True))
        return dict(values)

    async def hset(self, key: str, field: str, value: bytes | str) -> int:
        return int(await self.execute("HSET", key, field, value))

    async def hdel(self, key: str, *fields: str) -> int:
        return int(await self.execute("HDEL", key, *fields))

    async def eval(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """EVALSHA, falling back to loading the script once when redis does not know it
        (first use, or redis restarted or flushed its script cache)."""
        try:
            return await self.submit("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.submit("SCRIPT", "LOAD", script.source)
            return await self.submit("EVALSHA", script.sha, len(keys), *keys, *args)


async def _read_replies(parser: _AsyncHiredisParser, count: int) -> list[Any]:
    """`count` replies straight from the connection's hiredis reader: what redis-py's
    `read_response` does per reply (a coroutine, a timeout context and the push-message checks
    for each), once per socket read here instead; the round trip's own deadline bounds it.
    Error replies come back as their exception (hiredis builds them with redis-py's
    `parse_error`, so NOSCRIPT is a `NoScriptError`)."""
    reader = parser._reader
    assert reader is not None
    replies: list[Any] = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            await parser.read_from_socket()  # raises ConnectionError at EOF
            continue
        if isinstance(reply, RedisConnectionError):
            raise reply
        push = parser._hiredis_PushNotificationType
        if push is not None and isinstance(reply, push):  # RESP3 push: not a reply
            await parser.handle_push_response(reply)
            continue
        replies.append(reply)
    return replies


def as_batch(client: redis.asyncio.Redis | AutoPipeline) -> AutoPipeline:
    """The auto-pipeline to use: the one given (shared by every writer of the agent, so their
    commands travel together), or a new one on a plain client."""
    return client if isinstance(client, AutoPipeline) else AutoPipeline(client)
