"""Listening sockets inside another network namespace (`--netns`).

Why: in the end-to-end harness the gateway runs in its own network namespace with no route to
the host, while tests drive the explorer's admin API on host loopback. The explorer opens a
second listening socket on the same address and port *inside* the gateway's namespace, so the
gateway reaches it on its own loopback with no relay process copying every byte.

A socket belongs to the namespace its creating thread was in, so a short-lived thread enters the
namespace (`setns`), creates, binds and starts listening on the socket, and ends; the socket is
then served by the event loop like any other. Entering a namespace needs CAP_SYS_ADMIN.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")  # where `ip netns add NAME` puts its namespaces


class NetnsError(OSError):
    """The namespace cannot be entered (message names it and says why)."""


def namespace_path(name: str) -> Path:
    """`NAME` as `ip netns` names it (/run/netns/NAME), or a path (e.g. /proc/PID/ns/net)."""
    return Path(name) if "/" in name else NETNS_DIR / name


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _listen_here(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def listening_socket(netns: str, host: str, port: int, backlog: int = 128) -> socket.socket:
    """A non-blocking TCP socket listening on host:port inside network namespace `netns`.

    Raises NetnsError when the namespace cannot be entered, OSError when host:port cannot be
    bound there.
    """
    path = namespace_path(netns)
    outcome: list[socket.socket | BaseException] = []

    def work() -> None:
        # This thread ends right after: its namespace never leaks to other code.
        try:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise NetnsError(
                    exc.errno, f"cannot enter network namespace {netns} ({path}): {exc.strerror}"
                ) from None
            try:
                outcome.append(_listen_here(host, port, backlog))
            except OSError as exc:
                raise OSError(exc.errno, f"{exc.strerror} (in network namespace {netns})") from None
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=work, name=f"netns-listen-{netns}", daemon=True)
    thread.start()
    thread.join()
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    return result
