"""`--redis` URLs as the Go daemon reads them, turned into `redis.asyncio.Redis` clients.

Accepted: `tcp://host:port`, `tcp://[v6]:port`, `unix:///path/to/socket`. As in the Go daemon
(`redis/pool.go`), a URL *username* alone is the AUTH password (`tcp://secret@host:6379`); a
password part is honoured too (`tcp://:secret@host:6379`, or `tcp://user:secret@host:6379` for a
redis ACL user).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis.asyncio

__all__ = ["DEFAULT_REDIS_URL", "RedisTarget", "RedisURLError", "connect", "parse_redis_url"]

DEFAULT_REDIS_URL = "tcp://localhost:6379"
_DEFAULT_PORT = 6379


class RedisURLError(ValueError):
    """The `--redis` value cannot be used; the message says why and what is expected."""


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect; exactly one of `host` and `unix_path` is set."""

    host: str | None = None
    port: int = _DEFAULT_PORT
    unix_path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Printable form without secrets (for logs)."""
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _credentials(u: SplitResult) -> tuple[str | None, str | None]:
    if "@" not in u.netloc:
        return None, None
    user = unquote(u.username) if u.username else ""
    password = unquote(u.password) if u.password is not None else None
    if password is None:
        return None, (user or None)  # Go daemon: the username is the password
    return (user or None), (password or None)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a `--redis` value; RedisURLError with a clear message when it is not usable."""
    expected = "expected tcp://host:port or unix:///path/to/socket"
    try:
        u = urlsplit(url.strip())
        port = u.port
    except ValueError as exc:
        raise RedisURLError(f"invalid redis URL {url!r}: {exc}; {expected}") from exc
    username, password = _credentials(u)
    if u.scheme == "tcp":
        if not u.hostname:
            raise RedisURLError(f"invalid redis URL {url!r}: missing host; {expected}")
        if u.path not in ("", "/") or u.query or u.fragment:
            raise RedisURLError(f"invalid redis URL {url!r}: unexpected path or query; {expected}")
        if port == 0:
            raise RedisURLError(f"invalid redis URL {url!r}: port 0; {expected}")
        return RedisTarget(
            host=u.hostname,
            port=port or _DEFAULT_PORT,
            username=username,
            password=password,
        )
    if u.scheme == "unix":
        if not u.path or u.query or u.fragment:
            raise RedisURLError(f"invalid redis URL {url!r}: missing socket path; {expected}")
        if u.hostname:
            raise RedisURLError(
                f"invalid redis URL {url!r}: a unix socket URL has no host (use three slashes)"
            )
        return RedisTarget(unix_path=unquote(u.path), username=username, password=password)
    raise RedisURLError(f"unknown scheme {u.scheme!r} in redis URL {url!r}; {expected}")


def connect(url: str | RedisTarget, **options: Any) -> redis.asyncio.Redis:
    """An asyncio redis client (bytes in, bytes out) for a `--redis` URL."""
    target = url if isinstance(url, RedisTarget) else parse_redis_url(url)
    kwargs: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "decode_responses": False,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 10,
    }
    kwargs.update(options)
    if target.unix_path is not None:
        return redis.asyncio.Redis(unix_socket_path=target.unix_path, **kwargs)
    return redis.asyncio.Redis(host=target.host or "localhost", port=target.port, **kwargs)
