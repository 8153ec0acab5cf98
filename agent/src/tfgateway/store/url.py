"""`--redis` URLs as the Go daemon reads them, turned into `redis.asyncio.Redis` clients.

Accepted: `tcp://host:port`, `tcp://[v6]:port`, `unix:///path/to/socket`. As in the Go daemon
(`redis/pool.go`), a URL *username* alone is the AUTH password (`tcp://secret@host:6379`); a
password part is honoured too (`tcp://:secret@host:6379`, or `tcp://user:secret@host:6379` for a
redis ACL user). `--redis-password-file` gives the password in a file instead (a systemd
credential), so it is neither on the command line nor in the Nix store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError

__all__ = [
    "DEFAULT_REDIS_URL",
    "RedisAuthError",
    "RedisTarget",
    "RedisURLError",
    "check_auth",
    "connect",
    "parse_redis_url",
    "read_password_file",
]

DEFAULT_REDIS_URL = "tcp://localhost:6379"
_DEFAULT_PORT = 6379


class RedisURLError(ValueError):
    """The `--redis` value cannot be used; the message says why and what is expected."""


class RedisAuthError(Exception):
    """redis answers but refuses our credentials: a configuration mistake, never retried (a
    gateway that waits forever for a password it will never get looks alive and serves
    nothing)."""

    def __init__(self, where: str, has_password: bool, cause: object) -> None:
        if has_password:
            text = f"redis {where} refuses the configured password ({cause})"
        else:
            text = (
                f"redis {where} wants a password and none is configured "
                f"(--redis-password-file or tcp://PASSWORD@host:port) ({cause})"
            )
        super().__init__(text)


def read_password_file(path: str) -> str:
    """The redis password in `path`; one trailing newline is not part of it. A missing,
    unreadable or empty file is an error (never 'no password')."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RedisURLError(f"cannot read the redis password from {path}: {exc}") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise RedisURLError(f"{path} is empty: no redis password in it")
    return password


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


async def check_auth(url: str, password: str | None = None) -> None:
    """One PING without retries: RedisAuthError when redis answers but refuses the
    credentials; any other failure (redis down, loading) is raised as is, for the caller's
    back-off. The normal client retries authentication errors like dropped connections, so
    a wrong password would take it most of a minute to report."""
    target = parse_redis_url(url)
    options: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "socket_timeout": 5.0}
    if password is not None:
        options["password"] = password
    client = connect(target, **options)
    try:
        await client.ping()
    except AuthenticationError as exc:
        has_password = password is not None or target.password is not None
        raise RedisAuthError(target.describe(), has_password, exc) from None
    finally:
        await client.aclose()
