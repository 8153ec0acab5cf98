"""A real redis-server for tests, on a loopback port in a temporary directory."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.processes import binary, free_port, port_open, stop, wait_until


@dataclass
class RedisServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    persistent: bool = False
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            binary("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "1 1" if self.persistent else "",
            "--appendonly", "yes" if self.persistent else "no",
            "--notify-keyspace-events", "KEA",
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open("127.0.0.1", self.port), what=f"redis on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def save(self) -> None:
        """SAVE now. A persistent server also saves by itself every second (`save 1 1`), and
        SAVE is refused while that background save runs: wait for it and save again."""
        r = self.client()

        def saved() -> bool:
            try:
                return bool(r.save())
            except redis.ResponseError as exc:
                if "in progress" not in str(exc):
                    raise
                return False

        wait_until(saved, timeout=30, what=f"SAVE on redis {self.port}")
