"""The agent as a real program (`python -m tfgateway …`), for tests that kill and restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import stop

NO_RESOLVER = "127.0.0.1:9"


@dataclass
class AgentProcess:
    seed: Path
    explorer_url: str
    redis_url: str
    log_file: Path
    domains: list[str] = field(default_factory=lambda: ["gw.example.com"])
    nameservers: list[str] = field(default_factory=lambda: ["ns1.gw.example.com"])
    extra: list[str] = field(default_factory=list)
    proof_resolver: str = NO_RESOLVER
    """Where the agent looks name proofs up (`WorldDNS.resolver`); by default a port nothing
    answers on, so a claim that needs proof fails, and nothing is ever asked of the Internet."""
    poll_interval: float = 0.1
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def command(self) -> list[str]:
        args = [
            sys.executable, "-m", "tfgateway",
            "--seed", str(self.seed),
            "--explorer", self.explorer_url,
            "--redis", self.redis_url,
            "--location", "51.05,3.72,Ghent,Belgium,Europe",
            "--poll-interval", str(self.poll_interval),
            "--max-backoff", "0.5",
            "--reconcile-interval", "2",
            "--proof-resolver", self.proof_resolver,
        ]  # fmt: skip
        for d in self.domains:
            args += ["--domains", d]
        for n in self.nameservers:
            args += ["--nameservers", n]
        return args + self.extra

    def start(self) -> None:
        self.starts += 1
        with self.log_file.open("ab") as out:
            out.write(f"\n----- start {self.starts} -----\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")
