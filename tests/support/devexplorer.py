"""The development explorer for tests: in-process (same event loop) or as a real process.

In-process is cheapest for tests of HTTP clients; the subprocess form is for tests that kill or
restart it, or that run the agent as a separate program against it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.http import SyncHTTP
from tests.support.processes import free_port, port_open, stop, wait_until
from tfgateway_devexplorer.server import DevExplorer
from tfgateway_devexplorer.store import Store


@asynccontextmanager
async def devexplorer_in_process(
    store: Store | None = None, state_file: Path | None = None
) -> AsyncIterator[DevExplorer]:
    """A started DevExplorer on a free loopback port; `.url` is the agent's `--explorer`."""
    explorer = DevExplorer(store, host="127.0.0.1", port=0, state_file=state_file)
    await explorer.start()
    try:
        yield explorer
    finally:
        await explorer.stop()


@dataclass
class DevExplorerProcess:
    """`tfgateway-devexplorer` as a child process on a free port."""

    load: list[Path] = field(default_factory=list)
    state: Path | None = None
    port: int = field(default_factory=free_port)
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.admin_url}/api/v1"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "tfgateway_devexplorer", "--port", str(self.port)]
        for path in self.load:
            args += ["--load", str(path)]
        if self.state is not None:
            args += ["--state", str(self.state)]
        return args

    def start(self, timeout: float = 15.0) -> None:
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out)
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"tfgateway-devexplorer exited with {proc.returncode}")
            return port_open("127.0.0.1", self.port)

        wait_until(up, timeout=timeout, what=f"dev explorer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


class SyncAdmin:
    """The admin API (`/dev/...`), blocking: for tests that are not coroutines (kill loops)."""

    def __init__(self, admin_url: str, timeout: float = 30.0) -> None:
        self.http = SyncHTTP(admin_url, timeout=timeout)

    def post(self, path: str, body: Any) -> Any:
        r = self.http.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def state(self) -> dict[str, Any]:
        r = self.http.get("/dev/state")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def set_faults(self, **plan: Any) -> None:
        """Replaces the fault plan (none: faults off)."""
        r = self.http.put("/dev/faults", json=plan)
        assert r.status_code == 200, r.text


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline
    interval: float = 0.02,
    what: str = "",
) -> None:
    """`wait_until` for coroutines (for tests whose server runs on the same event loop)."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}")
        await asyncio.sleep(interval)
