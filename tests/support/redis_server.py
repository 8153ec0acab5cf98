"""A real redis-server for tests, on a loopback port in a temporary directory."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def save(self, timeout: float = 20.0) -> None:
        """SAVE, retried while a background save runs (`--save 1 1` starts them on its own, and
        SAVE is refused meanwhile)."""
        client = self.client()

        def saved() -> bool:
            try:
                client.save()
            except redis.ResponseError as exc:
                if "in progress" not in str(exc):
                    raise
                return False
            return True

        try:
            wait_until(saved, timeout=timeout, what="redis SAVE")
        finally:
            client.close()


def snapshot(r: redis.Redis, *, skip: tuple[str, ...] = ()) -> dict[bytes, Any]:
    """Every key with its full value (keys starting with one of `skip` left out), to prove that
    something changed nothing."""
    out: dict[bytes, Any] = {}
    for key in r.scan_iter(count=1000):
        if key.decode(errors="replace").startswith(skip):
            continue
        kind = r.type(key)
        if kind == b"string":
            out[key] = r.get(key)
        elif kind == b"hash":
            out[key] = r.hgetall(key)
        elif kind == b"set":
            out[key] = r.smembers(key)
        elif kind == b"list":
            out[key] = r.lrange(key, 0, -1)
        else:
            out[key] = (kind, r.dump(key))
    return out
