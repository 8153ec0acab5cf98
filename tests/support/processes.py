"""Start real programs for tests: free ports, binaries, polling with deadlines (never sleeps)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out; good enough for tests on loopback."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP at once (a DNS server binds both): the kernel's UDP
    pick alone may be a TCP port in use, and then CoreDNS exits on its TCP bind."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


def binary(name: str) -> str:
    """Path of a program the test needs; a missing one fails the test loudly (never a skip)."""
    bin_dir = os.environ.get("TFGW_BIN", "/var/cache/tfgateway/bin")
    candidate = Path(bin_dir) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"required program {name!r} not found in {bin_dir} or PATH; run scripts/setup.sh first"
    )


def agent_program(name: str) -> str:
    """The agent's console scripts: next to this Python (the venv), else like any binary."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return binary(name)


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> None:
    """Poll `predicate` until it is true or the deadline passes (then fail with `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate a process and reap it; kill it if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
