"""Result PUTs sent by a child process, on the machine's other core.

The explorer has no batch endpoint: every result is one HTTP request, and aiohttp's request
path is about a sixth of the agent's CPU during a catch-up (benchmarks/agent). The agent is one
thread; here that work moves to a child process (`python -m tfgateway.explorer.sender`) that
runs the same `ExplorerClient.put_result`, so the parent only hands it a frame and reads a
verdict back, and the two run in parallel.

The child is a transport, nothing more: the outbox still persists every message before it is
sent and removes it only once the explorer acknowledged it, so a child that dies loses nothing
(its requests fail as retryable, the outbox retries, the next request starts a new child); a
child that cannot start at all leaves the PUTs to the agent's own client for `START_PAUSE`.
The child is started only for a backlog (`wanted`; single results cost no second interpreter)
and exits after `IDLE_STOP` seconds without a request. It gets the node's seed over its stdin
(never argv or the environment) to sign the requests as the parent would; it exits when its
stdin closes, i.e. with the parent too.

Frames, little-endian: the parent's first is `u32 length` + JSON settings + the 32-byte seed;
then requests `u32 id, u16 len(gwid), u32 len(body)` + gwid + body; the child answers each with
`u32 id, i16 status (0: acknowledged, -1: no status), u8 retryable, u16 len(message)` + message,
the text of the `ExplorerError` the parent raises in its place. The child says it is ready
with one byte (`R`) before the first answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, Final

from tfgateway.explorer.client import (
    POOL_SIZE,
    ExplorerClient,
    ExplorerError,
    SenderUnavailableError,
    env_proxy,
)
from tfgateway.explorer.put_client import PutClient, Verdict
from tfgateway.node.identity import SEED_SIZE, Identity
from tfgateway.telemetry.logs import LogFormat, setup_logging

__all__ = ["PutSender", "main"]

log = logging.getLogger(__name__)

_REQUEST: Final = struct.Struct("<IHI")
_REPLY: Final = struct.Struct("<IhBH")
_SETTINGS: Final = struct.Struct("<I")
MAX_MESSAGE: Final = 4096
STOP_TIMEOUT: Final = 5.0
GATHER: Final = 0.002
"""Requests (in the agent) and verdicts (in the child) gather this long before they are written
to the pipe: each write wakes the other process, and one per loop turn was 6.6 % of the agent's
CPU during a catch-up of 50,000 (benchmarks/agent); a PUT is 2 ms later, at most 4 ms."""
_NO_VERDICT: Final = (-2, True, "")
"""A PUT's verdict when the child gave none in time (`PutSender._expire`)."""
IDLE_STOP: Final = 60.0
"""A child without a request for this long exits (the next backlog starts another)."""
START_TIMEOUT: Final = 60.0
START_PAUSE: Final = 60.0
"""After a child failed to start, PUTs are made in the agent's process for this long."""
READY: Final = b"R"


def _settings_frame(
    base: str, seed: bytes, timeout: float, pool_size: int, log_format: str
) -> bytes:
    settings = {"url": base, "timeout": timeout, "pool_size": pool_size, "log_format": log_format}
    text = json.dumps(settings).encode()
    return _SETTINGS.pack(len(text)) + text + seed


def _child_env() -> dict[str, str]:
    """The parent's environment, with its module path: a wrapped program (Nix) finds its
    packages through `sys.path`, not through an environment variable the child would see."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


class PutSender:
    """The parent's side: `put_result` as `ExplorerClient.put_result`, done by the child."""

    def __init__(
        self,
        base: str,
        seed: bytes,
        *,
        timeout: float,
        pool_size: int = POOL_SIZE,
        log_format: LogFormat = "text",
        name: str = "sender",
        python: str = sys.executable,
        wanted: Callable[[], bool] | None = None,
        idle_stop: float = IDLE_STOP,
    ) -> None:
        self._settings = _settings_frame(base, seed, timeout, pool_size, log_format)
        self._python = python
        self._wanted = wanted
        """Whether a child is worth starting now (a backlog); None: always. A running child
        is used whatever it says."""
        self._idle_stop = idle_stop
        self._last_used = 0.0
        self._retiring = False
        self._paused_until = float("-inf")
        self._timeout = timeout
        self._name = name
        self._proc: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._waiting: dict[int, asyncio.Future[tuple[int, bool, str]]] = {}
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        """(deadline, request id) of the PUTs sent, in order (ids answered are dropped from
        the front as new ones come)."""
        self._expiry: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._closed = False
        self.started = 0
        """Children started so far (one unless a child died)."""

    async def _child(self) -> asyncio.subprocess.Process:
        if self._closed:
            raise ExplorerError("explorer sender is closed", retryable=False)
        if self._retiring:
            raise SenderUnavailableError("explorer sender process stopping (idle)")
        proc = self._proc
        if proc is None and self._wanted is not None and not self._wanted():
            raise SenderUnavailableError("no backlog: the agent sends this one itself")
        if proc is not None and proc.returncode is None and self._reader_task is not None:
            return proc
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._proc is not None and self._proc is not proc:
                return self._proc
            now = asyncio.get_running_loop().time()
            if now < self._paused_until:
                raise SenderUnavailableError("explorer sender process paused after a failed start")
            try:
                return await self._start()
            except SenderUnavailableError as exc:
                self._paused_until = now + START_PAUSE
                log.warning(
                    "%s; result PUTs are made by the agent itself for %g s", exc, START_PAUSE
                )
                raise

    async def _start(self) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "tfgateway.explorer.sender",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=_child_env(),
            )
        except OSError as exc:
            raise SenderUnavailableError(
                f"cannot start the explorer sender process: {exc}"
            ) from exc
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(self._settings)
        try:  # ready: its imports done and its client made (seconds on a loaded machine)
            async with asyncio.timeout(START_TIMEOUT):
                ready = await proc.stdout.readexactly(1)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SenderUnavailableError(
                f"explorer sender process did not start: {exc!r}"
            ) from None
        if ready != READY:
            proc.kill()
            await proc.wait()
            raise SenderUnavailableError(f"explorer sender process said {ready!r}, not ready")
        self._proc = proc
        self.started += 1
        log.info("explorer sender process %d started: result PUTs of a backlog", proc.pid)
        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        self._reader_task = loop.create_task(self._read_replies(proc), name=f"{self._name}-replies")
        self._idle_task = loop.create_task(self._stop_when_idle(proc), name=f"{self._name}-idle")
        return proc

    async def _stop_when_idle(self, proc: asyncio.subprocess.Process) -> None:
        """Close the child's stdin once it went `idle_stop` seconds without a request (it then
        exits): a gateway between bursts keeps no second interpreter in memory."""
        loop = asyncio.get_running_loop()
        while proc is self._proc and proc.returncode is None:
            idle = loop.time() - self._last_used
            if idle >= self._idle_stop and not self._waiting:
                self._retiring = True
                if proc.stdin is not None:
                    proc.stdin.close()
                log.info("explorer sender idle for %g s: stopped until the next backlog", idle)
                return
            await asyncio.sleep(max(self._idle_stop - idle, self._idle_stop / 4))

    async def put_result(self, gwid: str, body: bytes) -> None:
        """Send one result PUT; ExplorerError as the in-process client would raise it."""
        proc = await self._child()
        loop = asyncio.get_running_loop()
        now = self._last_used = loop.time()
        rid = next(self._ids) & 0xFFFFFFFF
        future: asyncio.Future[tuple[int, bool, str]] = loop.create_future()
        waiting = self._waiting
        waiting[rid] = future
        gwid_bytes = gwid.encode()
        self._out.append(_REQUEST.pack(rid, len(gwid_bytes), len(body)) + gwid_bytes + body)
        if not self._flush_scheduled:  # the requests of `GATHER` seconds go in one write
            self._flush_scheduled = True
            loop.call_later(GATHER, self._flush, proc)
        # The child's request has its own total timeout; this only guards a stuck child: one
        # timer for all the PUTs in flight (`_expire`), not one per PUT.
        deadlines = self._deadlines
        while deadlines and deadlines[0][1] not in waiting:
            deadlines.popleft()
        deadlines.append((now + self._timeout + STOP_TIMEOUT, rid))
        if self._expiry is None:
            self._expiry = loop.call_at(deadlines[0][0], self._expire)
        try:
            verdict = await future
        finally:
            waiting.pop(rid, None)
        if verdict is _NO_VERDICT:
            raise ExplorerError(
                f"explorer sender: no verdict within {self._timeout + STOP_TIMEOUT:g} s",
                retryable=True,
            )
        status, retryable, message = verdict
        if status != 0 or message:
            raise ExplorerError(message, status=status if status > 0 else None, retryable=retryable)

    def _expire(self) -> None:
        """Fail the PUTs whose verdict is overdue (deadlines come in the order sent), then
        wait for the next deadline of a PUT still waiting."""
        self._expiry = None
        now = asyncio.get_running_loop().time()
        deadlines, waiting = self._deadlines, self._waiting
        while deadlines:
            deadline, rid = deadlines[0]
            future = waiting.get(rid)
            if future is not None and not future.done():
                if deadline > now:
                    self._expiry = asyncio.get_running_loop().call_at(deadline, self._expire)
                    return
                future.set_result(_NO_VERDICT)
            deadlines.popleft()

    def _flush(self, proc: asyncio.subprocess.Process) -> None:
        self._flush_scheduled = False
        frames, self._out = self._out, []
        if proc.stdin is None or proc.returncode is not None or proc is not self._proc:
            self._fail_all("explorer sender process exited")
            return
        try:
            proc.stdin.write(b"".join(frames))
        except (OSError, RuntimeError) as exc:
            self._fail_all(f"explorer sender process unreachable: {exc}")

    def _fail_all(self, why: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_result((-1, True, why))

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                head = await proc.stdout.readexactly(_REPLY.size)
                rid, status, retryable, length = _REPLY.unpack(head)
                message = (await proc.stdout.readexactly(length)).decode("utf-8", "replace")
                future = self._waiting.get(rid)
                if future is not None and not future.done():
                    future.set_result((status, bool(retryable), message))
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            retired = self._retiring
            if self._proc is proc:
                self._proc = None
                self._reader_task = None
                self._retiring = False
            self._fail_all("explorer sender process exited")
            if not self._closed and not retired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                log.warning("explorer sender process ended; a new one starts with the next PUT")
            if retired:
                await proc.wait()

    async def aclose(self) -> None:
        """Stop the child (its stdin closes, it finishes what it holds and exits)."""
        self._closed = True
        if self._idle_task is not None:
            self._idle_task.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


# -- the child ---------------------------------------------------------------------------------


class _AiohttpPuts:
    """The child's PUTs through `ExplorerClient` (with a proxy from the environment, which
    `PutClient` does not speak): a task per request, the same verdicts."""

    def __init__(self, client: ExplorerClient, verdict: Verdict) -> None:
        self._client = client
        self._verdict = verdict
        self._tasks: set[asyncio.Task[None]] = set()

    def put(self, token: int, gwid: str, body: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._send(token, gwid, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, token: int, gwid: str, body: bytes) -> None:
        status, retryable, message = 0, False, ""
        try:
            await self._client.put_result(gwid, body)
        except ExplorerError as exc:
            status, retryable, message = exc.status or -1, exc.retryable, str(exc)
        self._verdict(token, status, retryable, message)

    async def aclose(self) -> None:
        await self._client.aclose()


def _puts(settings: dict[str, Any], verdict: Verdict) -> PutClient | _AiohttpPuts:
    """The lean client (`put_client.py`), or aiohttp's where a proxy is to be used."""
    url, identity = settings["url"], Identity(settings["seed"])
    timeout, pool_size = float(settings["timeout"]), int(settings["pool_size"])
    if env_proxy(url)[0] is None:
        return PutClient(url, identity, verdict, timeout=timeout, pool_size=pool_size)
    client = ExplorerClient(url, identity, timeout=timeout, pool_size=pool_size)
    return _AiohttpPuts(client, verdict)


async def _serve() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout.buffer
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    try:
        (length,) = _SETTINGS.unpack(await reader.readexactly(_SETTINGS.size))
        settings: dict[str, Any] = json.loads(await reader.readexactly(length))
        settings["seed"] = await reader.readexactly(SEED_SIZE)
    except (asyncio.IncompleteReadError, ValueError) as exc:
        log.error("explorer sender: no settings from the agent: %s", exc)
        return 2
    setup_logging(False, settings.get("log_format", "text"))
    replies: list[bytes] = []
    in_flight = 0
    idle = asyncio.Event()

    def flush() -> None:
        writer.write(b"".join(replies))
        replies.clear()

    def verdict(rid: int, status: int, retryable: bool, message: str) -> None:
        nonlocal in_flight
        text = message.encode()[:MAX_MESSAGE]
        if not replies:  # the verdicts of `GATHER` seconds in one write
            loop.call_later(GATHER, flush)
        replies.append(_REPLY.pack(rid, status, retryable, len(text)) + text)
        in_flight -= 1
        if not in_flight:
            idle.set()

    puts = _puts(settings, verdict)
    writer.write(READY)
    head = _REQUEST.size
    buffer = bytearray()
    try:
        while data := await reader.read(2**20):  # empty: the agent closed our stdin
            buffer += data
            at = 0
            while len(buffer) - at >= head:  # every whole request frame in what came
                rid, gwid_length, body_length = _REQUEST.unpack_from(buffer, at)
                end = at + head + gwid_length + body_length
                if len(buffer) < end:
                    break
                gwid = buffer[at + head : at + head + gwid_length].decode()
                body = bytes(buffer[at + head + gwid_length : end])
                at = end
                in_flight += 1
                idle.clear()
                try:
                    puts.put(rid, gwid, body)
                except Exception as exc:
                    verdict(rid, -1, True, f"explorer sender: {type(exc).__name__}: {exc}")
            del buffer[:at]
        if in_flight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await idle.wait()
        if replies:
            flush()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.drain()
    finally:
        await puts.aclose()
    return 0


def main() -> int:
    """`python -m tfgateway.explorer.sender`: the child (started by `PutSender` only)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve())
    return uvloop.run(_serve())


if __name__ == "__main__":
    raise SystemExit(main())
