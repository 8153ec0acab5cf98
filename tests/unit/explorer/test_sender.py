"""Result PUTs through the child process (explorer/sender.py): the same request bytes, the same
errors as the in-process client, concurrency, and a child that dies loses nothing (its
requests fail as retryable; the next PUT starts a new child)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from pathlib import Path

import pytest

from tests.support.devexplorer import wait_until_async
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
from tfgateway.explorer.client import ExplorerClient, ExplorerError
from tfgateway.explorer.sender import PutSender
from tfgateway.node.identity import Identity

__all__ = ["explorer"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(60)


def sending(server: Explorer, **kwargs: object) -> tuple[ExplorerClient, PutSender, list[str]]:
    errors: list[str] = []
    c = client(server, on_error=errors.append)
    sender = PutSender(c.base, SEED, timeout=3.0)
    c.put_via = sender.put_result
    return c, sender, errors


async def test_the_child_sends_the_same_signed_request(explorer: Explorer) -> None:
    explorer.queue(reply(201))
    c, sender, errors = sending(explorer)
    body = b'{"category":7,"workload_id":"4521-1","data_json":null}\n'
    try:
        await c.put_result("4521-1", body)
    finally:
        await sender.aclose()
        await c.aclose()
    (put,) = explorer.seen
    assert (put.method, put.target, put.body) == ("PUT", f"{WORKLOADS}/4521-1", body)
    assert put.headers["Threebot-Id"] == NODE
    assert_signed(put)
    assert_plain_headers(put)
    assert errors == []
    assert sender.started == 1


async def test_errors_are_the_in_process_clients(explorer: Explorer) -> None:
    explorer.queue(
        reply(503, b'{"error": "maintenance window"}'),
        reply(200),
        reply(503, b'{"error": "maintenance window"}'),
        reply(200),
    )
    c, sender, errors = sending(explorer)
    plain = client(explorer)
    try:
        got = []
        for sent_by in (c, plain, c, plain):
            with pytest.raises(ExplorerError) as info:
                await sent_by.put_result("1-1", b"{}\n")
            got.append((str(info.value), info.value.status, info.value.retryable))
    finally:
        await sender.aclose()
        await c.aclose()
        await plain.aclose()
    # 503 and a wrong success code, each through the child and in process: the same errors
    assert got[0] == got[2]
    assert got[1] == got[3]
    assert got[0][1:] == (503, True)
    assert got[0][0].endswith("HTTP 503: maintenance window")
    assert got[1][1:] == (200, False)
    assert "HTTP 200" in got[1][0]
    assert errors == ["put_result", "put_result"]  # counted by the agent's client, once each


async def test_an_unreachable_explorer_is_retryable_without_a_status() -> None:
    c = ExplorerClient(f"http://127.0.0.1:{free_port()}", Identity(SEED), timeout=3)
    sender = PutSender(c.base, SEED, timeout=3.0)
    c.put_via = sender.put_result
    try:
        with pytest.raises(ExplorerError, match="request failure") as info:
            await c.put_result("1-1", b"{}\n")
    finally:
        await sender.aclose()
        await c.aclose()
    assert info.value.retryable
    assert info.value.status is None


async def test_many_at_once(explorer: Explorer) -> None:
    explorer.queue(*(reply(201) for _ in range(200)))
    c, sender, errors = sending(explorer)
    try:
        await asyncio.gather(*(c.put_result(f"{i}-1", f"{i}\n".encode()) for i in range(200)))
    finally:
        await sender.aclose()
        await c.aclose()
    assert sorted((r.target, r.body) for r in explorer.seen) == sorted(
        (f"{WORKLOADS}/{i}-1", f"{i}\n".encode()) for i in range(200)
    )
    assert errors == []
    assert sender.started == 1


async def test_a_dead_child_fails_its_requests_as_retryable_and_is_replaced(
    explorer: Explorer,
) -> None:
    hold, arrived = asyncio.Event(), asyncio.Event()

    async def never(request: object) -> object:
        arrived.set()
        await hold.wait()
        raise AssertionError("unreachable")

    explorer.queue(never, reply(201))  # type: ignore[arg-type]
    c, sender, _ = sending(explorer)
    try:
        stuck = asyncio.create_task(c.put_result("1-1", b"{}\n"))
        async with asyncio.timeout(30):
            await arrived.wait()  # the child has sent it and waits for the answer
        assert sender._proc is not None
        os.kill(sender._proc.pid, signal.SIGKILL)
        with pytest.raises(ExplorerError, match="sender process exited") as info:
            await stuck
        assert info.value.retryable
        assert info.value.status is None
        await c.put_result("2-1", b"{}\n")  # a new child
        assert sender.started == 2
    finally:
        hold.set()
        await sender.aclose()
        await c.aclose()
    assert [r.target for r in explorer.seen] == [f"{WORKLOADS}/1-1", f"{WORKLOADS}/2-1"]


async def test_closed_sender_refuses_for_good(explorer: Explorer) -> None:
    c, sender, _ = sending(explorer)
    await sender.aclose()
    with pytest.raises(ExplorerError, match="closed") as info:
        await c.put_result("1-1", b"{}\n")
    await c.aclose()
    assert not info.value.retryable


async def test_the_seed_is_neither_in_argv_nor_in_the_environment(explorer: Explorer) -> None:
    explorer.queue(reply(201))
    c, sender, _ = sending(explorer)
    try:
        await c.put_result("1-1", b"{}\n")
        assert sender._proc is not None
        pid = sender._proc.pid
        cmdline, environ = await asyncio.to_thread(
            lambda: (
                Path(f"/proc/{pid}/cmdline").read_bytes(),
                Path(f"/proc/{pid}/environ").read_bytes(),
            )
        )
    finally:
        await sender.aclose()
        await c.aclose()
    assert cmdline.split(b"\0")[1:3] == [b"-m", b"tfgateway.explorer.sender"]
    for form in (SEED, SEED.hex().encode(), base64.b64encode(SEED)):
        assert form not in cmdline
        assert form not in environ


async def test_a_child_that_cannot_start_leaves_the_puts_to_the_agent(
    explorer: Explorer, tmp_path: Path
) -> None:
    """No interpreter to run (or one that never says ready): PUTs go out in process, for
    START_PAUSE before the next attempt, instead of failing until the child runs."""
    explorer.queue(reply(201), reply(201))
    errors: list[str] = []
    c = client(explorer, on_error=errors.append)
    sender = PutSender(c.base, SEED, timeout=3.0, python=str(tmp_path / "no-python"))
    c.put_via = sender.put_result
    try:
        await c.put_result("1-1", b"{}\n")
        await c.put_result("2-1", b"{}\n")  # paused: not tried again
    finally:
        await sender.aclose()
        await c.aclose()
    assert [r.target for r in explorer.seen] == [f"{WORKLOADS}/1-1", f"{WORKLOADS}/2-1"]
    assert_signed(explorer.seen[0])
    assert sender.started == 0
    assert errors == []


async def test_a_child_that_exits_before_it_is_ready(explorer: Explorer, tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    explorer.queue(reply(201))
    c = client(explorer)
    sender = PutSender(c.base, SEED, timeout=3.0, python=str(fake))
    c.put_via = sender.put_result
    try:
        await c.put_result("1-1", b"{}\n")
    finally:
        await sender.aclose()
        await c.aclose()
    assert [r.target for r in explorer.seen] == [f"{WORKLOADS}/1-1"]
    assert sender.started == 0


async def test_no_child_without_a_backlog(explorer: Explorer) -> None:
    explorer.queue(reply(201), reply(201))
    backlog = [False]
    c = client(explorer)
    sender = PutSender(c.base, SEED, timeout=3.0, wanted=lambda: backlog[0])
    c.put_via = sender.put_result
    try:
        await c.put_result("1-1", b"{}\n")  # sent by the agent's own client
        assert sender.started == 0
        backlog[0] = True
        await c.put_result("2-1", b"{}\n")
        assert sender.started == 1
        backlog[0] = False  # a running child is used until it goes idle
        explorer.queue(reply(201))
        await c.put_result("3-1", b"{}\n")
        assert sender.started == 1
    finally:
        await sender.aclose()
        await c.aclose()
    assert [r.target for r in explorer.seen] == [f"{WORKLOADS}/{i}-1" for i in (1, 2, 3)]


async def test_an_idle_child_stops_and_the_next_backlog_starts_another(
    explorer: Explorer,
) -> None:
    explorer.queue(reply(201), reply(201))
    c = client(explorer)
    sender = PutSender(c.base, SEED, timeout=3.0, idle_stop=0.5)
    c.put_via = sender.put_result
    try:
        await c.put_result("1-1", b"{}\n")
        first = sender._proc
        assert first is not None
        async with asyncio.timeout(20):
            assert await first.wait() == 0  # closed its stdin, the child exits on its own

        async def let_go() -> bool:  # and the sender has read the end of its pipe
            return sender._proc is None

        await wait_until_async(let_go, timeout=20, what="the idle child let go")
        await c.put_result("2-1", b"{}\n")
        assert sender.started == 2
    finally:
        await sender.aclose()
        await c.aclose()
    assert [r.target for r in explorer.seen] == [f"{WORKLOADS}/1-1", f"{WORKLOADS}/2-1"]


async def test_with_a_proxy_the_child_sends_through_it(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's lean client speaks no proxy: with HTTP_PROXY set it uses aiohttp's client,
    which does (the request goes to the proxy in absolute form)."""
    explorer.queue(reply(201), reply(503, b'{"error": "maintenance window"}'))
    monkeypatch.setenv("HTTP_PROXY", explorer.base.removesuffix("/api/v1"))
    monkeypatch.setenv("NO_PROXY", "")
    c = ExplorerClient("http://explorer.test/api/v1", Identity(SEED), timeout=3)
    sender = PutSender(c.base, SEED, timeout=3.0)
    c.put_via = sender.put_result
    try:
        await c.put_result("4521-1", b"{}\n")
        with pytest.raises(ExplorerError, match=r"HTTP 503: maintenance window$") as info:
            await c.put_result("4521-2", b"{}\n")
    finally:
        await sender.aclose()
        await c.aclose()
    assert [r.target for r in explorer.seen] == [
        f"http://explorer.test/api/v1/reservations/nodes/{NODE}/workloads/4521-{i}" for i in (1, 2)
    ]
    assert (info.value.status, info.value.retryable) == (503, True)
    assert sender.started == 1


async def test_a_stuck_child_fails_each_put_after_the_guard_as_retryable(
    explorer: Explorer,
) -> None:
    """A child that neither answers nor dies (stopped): each PUT fails after its timeout plus
    the stop allowance, retryable, from the one timer that guards every PUT in flight (PUTs
    answered before leave nothing behind)."""
    explorer.queue(reply(201), reply(201))
    c = client(explorer)
    sender = PutSender(c.base, SEED, timeout=0.2)
    try:
        await sender.put_result("1-1", b"{}\n")  # the child is up; answered
        assert sender._proc is not None
        os.kill(sender._proc.pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(sender.put_result("2-1", b"{}\n"))
        second = asyncio.create_task(sender.put_result("3-1", b"{}\n"))
        for task in (first, second):
            with pytest.raises(ExplorerError, match=r"no verdict within 5.2 s") as info:
                await task
            assert info.value.retryable
            assert info.value.status is None
        assert loop.time() - started >= 5.2
        assert sender._waiting == {}
        assert not sender._deadlines
        assert sender._expiry is None
        os.kill(sender._proc.pid, signal.SIGCONT)
    finally:
        await sender.aclose()
        await c.aclose()
