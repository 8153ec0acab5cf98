"""Network namespaces for the end-to-end gateway: create, link, run programs in, tear down.

Why namespaces: the gateway must be seen the way users see it (a resolver and an HTTP client on
another host, a NATed tunnel client that can reach only the gateway), yet never send traffic
outside this machine. Every address used here lives inside namespaces this module created; the
host namespace gets no route to them.

Why `setns` on the calling thread: a socket belongs to the namespace its creating thread was in,
so the test process can open sockets "in the client namespace" without a subprocess per query.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
# One file per live run: its owner's pid, so a later run can remove what a killed one left.
RUNS_DIR = Path("/run/tfgateway-netns")

_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


class NetnsError(RuntimeError):
    """A namespace operation failed; the message carries the command and its output."""


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace `name` (sockets made stay there)."""
    with _setns_lock:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)


@dataclass(frozen=True)
class Namespace:
    """One named network namespace (`ip netns` style, so `ip netns exec <name>` works)."""

    name: str

    def exec_args(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """Run a short command in the namespace and return its stdout."""
        proc = subprocess.run(
            self.exec_args(args), capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise NetnsError(
                f"in {self.name}: {' '.join(args)} failed ({proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout

    def open_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A new socket that lives in this namespace."""
        with entered(self.name):
            return socket.socket(family, kind)

    def connect(self, host: str, port: int, timeout: float = 2.0) -> socket.socket:
        """A TCP connection opened from inside this namespace."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.open_socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def port_open(self, host: str, port: int) -> bool:
        try:
            self.connect(host, port, timeout=0.3).close()
        except OSError:
            return False
        return True

    def pids(self) -> list[int]:
        proc = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(p) for p in proc.stdout.split()]


@dataclass(frozen=True)
class Link:
    """A veth pair between two namespaces, with one address on each end."""

    a: Namespace
    a_addr: str  # with prefix, e.g. 10.71.1.1/24
    b: Namespace
    b_addr: str


@dataclass
class NamespaceSet:
    """Namespaces of one run, all prefixed with a short random run id; `close()` removes all.

    Names are `<prefix><runid>-<role>`, so two runs (or a test and the local run) never
    collide, and `reap_stale()` can recognise leftovers of a run whose process was killed.
    """

    prefix: str = "tg"
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: dict[str, Namespace] = field(default_factory=dict)

    def __post_init__(self) -> None:
        reap_stale()
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        self._marker().write_text(f"{os.getpid()}\n{self.prefix}{self.run_id}-\n")

    def _marker(self) -> Path:
        return RUNS_DIR / f"{self.prefix}{self.run_id}"

    def add(self, role: str) -> Namespace:
        ns = Namespace(f"{self.prefix}{self.run_id}-{role}")
        _ip("netns", "add", ns.name)
        self.namespaces[role] = ns
        _ip("-n", ns.name, "link", "set", "lo", "up")
        return ns

    def __getitem__(self, role: str) -> Namespace:
        return self.namespaces[role]

    def link(self, link: Link, a_if: str, b_if: str) -> None:
        """Create a veth pair directly inside both namespaces (the host never sees it)."""
        _ip(
            "link", "add", a_if, "netns", link.a.name, "type", "veth",
            "peer", "name", b_if, "netns", link.b.name,
        )  # fmt: skip
        for ns, ifname, addr in ((link.a, a_if, link.a_addr), (link.b, b_if, link.b_addr)):
            if ":" in addr:
                # No duplicate address detection: the address is usable at once.
                _ip("-n", ns.name, "addr", "add", addr, "dev", ifname, "nodad")
            else:
                _ip("-n", ns.name, "addr", "add", addr, "dev", ifname)
            _ip("-n", ns.name, "link", "set", ifname, "up")

    def close(self) -> None:
        """Kill every process still in our namespaces, then delete them (idempotent)."""
        for ns in list(self.namespaces.values()):
            _kill_and_delete(ns.name)
        self.namespaces.clear()
        with contextlib.suppress(FileNotFoundError):
            self._marker().unlink()


def _kill_and_delete(name: str) -> None:
    ns = Namespace(name)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = ns.pids()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3.0
        while ns.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Remove namespaces left by runs whose owning process is gone; return their names."""
    removed: list[str] = []
    if not RUNS_DIR.is_dir():
        return removed
    for marker in RUNS_DIR.iterdir():
        try:
            pid_text, prefix = marker.read_text().split()[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        if NETNS_DIR.is_dir():
            for entry in NETNS_DIR.iterdir():
                if entry.name.startswith(prefix):
                    _kill_and_delete(entry.name)
                    removed.append(entry.name)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
    return removed
