"""The explorer's HTTP API as the gateway uses it (explorer spec §1-3), over aiohttp.

Same paths, bodies (Go `json.Encoder` bytes) and accepted status codes as the Go client, with
what the Go client lacks: a total timeout on every request, bounded reads of every answer, and a
clear split between errors worth retrying (transport failures, timeouts, 5xx, 408, 429) and
errors that will never succeed. Retry policy lives with the callers (`Backoff`, `retrying`): the
poll loop, the outbox and registration differ.

aiohttp rather than httpx because the outbox sends thousands of result PUTs, up to 16 at a time,
over a keep-alive pool: measured in `benchmarks/agent/bench_explorer_client.py`, httpx costs
about ten times the CPU per request.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import math
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from tfgateway.explorer.signatures import Signer, sign_headers
from tfgateway.model import fastjson, gojson
from tfgateway.node.location import Location

if TYPE_CHECKING:
    from tfgateway.explorer.models import User

__all__ = [
    "COUNTER_KEYS",
    "DEFAULT_EXPLORER",
    "DEFAULT_TIMEOUT",
    "Backoff",
    "ExplorerClient",
    "ExplorerError",
    "PollDecodeError",
    "PollResult",
    "SenderUnavailableError",
    "base_url",
    "env_proxy",
    "error_text",
    "gateway_body",
    "reserved_resources_body",
    "retrying",
    "ssl_context",
]

log = logging.getLogger(__name__)

DEFAULT_EXPLORER: Final = "https://explorer.grid.tf/api/v1"
API_PATH: Final = "/api/v1"
# WorkloadAmount keys in Go order (explorer spec §3.3).
COUNTER_KEYS: Final = (
    "network",
    "network_resource",
    "volume",
    "zdb_namespace",
    "container",
    "k8s_vm",
    "proxy",
    "reverse_proxy",
    "subdomain",
    "delegate_domain",
)
MAX_POLL_BODY: Final = 64 * 1024 * 1024
"""Largest poll answer accepted (decoded bytes); enforced while reading."""
MAX_BODY: Final = 1024 * 1024
"""Largest other answer read (a phonebook user, an ignored `null`): they are tiny."""
ERROR_HEAD: Final = 4096
"""Bytes of a failed answer read for its `{"error": ...}` text."""
DEFAULT_TIMEOUT: Final = 15.0
POOL_SIZE: Final = 32
"""Keep-alive connections to the explorer: PUTs (the outbox has up to 64 in flight; more wait
for a connection), poll, stats and uptime."""
USER_AGENT: Final = "tfgateway/2"
_CHUNK: Final = 64 * 1024

T = TypeVar("T")


class ExplorerError(Exception):
    """A failed explorer call; `retryable` says whether the same call may succeed later."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class SenderUnavailableError(ExplorerError):
    """The result sender's child process cannot run: the PUT is made in this process."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class PollDecodeError(ExplorerError):
    """A 200 poll answer whose body or `X-Last-Id` cannot be decoded (never retryable as is)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200, retryable=False)


@dataclass(frozen=True)
class PollResult:
    items: list[Any]
    """Raw decoded poll items; each is validated on its own (models.parse_workload)."""
    last_id: int


def base_url(url: str) -> str:
    """The Go client's rule: a URL whose path does not end with `/api/v1` gets that path."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"explorer URL {url!r} must be an http:// or https:// URL with a host")
    path = parts.path if parts.path.endswith(API_PATH) else API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def gateway_body(
    *,
    node_id: str,
    public_key_hex: str,
    farm_id: int,
    os_version: str,
    location: Location,
    domains: Sequence[str] | None,
    nameservers: Sequence[str] | None,
    tcp_router_port: int,
    free_to_use: bool,
) -> dict[str, Any]:
    """`directory.Gateway` for registration, keys in Go order (explorer spec §3.1)."""
    return {
        "id": 0,
        "node_id": node_id,
        "farm_id": farm_id,
        "os_version": os_version,
        "created": 0,
        "updated": 0,
        "uptime": 0,
        "address": "",
        "location": {
            "city": location.city,
            "country": location.country,
            "continent": location.continent,
            "latitude": float(location.latitude),
            "longitude": float(location.longitude),
        },
        "public_key_hex": public_key_hex,
        "workloads": dict.fromkeys(COUNTER_KEYS, 0),
        "managed_domains": list(domains) if domains else None,
        "tcp_router_port": tcp_router_port,
        "dns_nameserver": list(nameservers) if nameservers else None,
        "free_to_use": free_to_use,
    }


def reserved_resources_body(counters: Mapping[str, int]) -> dict[str, Any]:
    """ResourceAmount (all zero, floats printed the Go way) + WorkloadAmount, flattened."""
    body: dict[str, Any] = {"cru": 0, "mru": 0.0, "hru": 0.0, "sru": 0.0}
    for key in COUNTER_KEYS:
        body[key] = int(counters.get(key, 0))
    return body


@dataclass
class Backoff:
    """Capped exponential back-off with jitter (the delay is in [(1-jitter)·d, d])."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * self.multiplier**self.attempt)
        self.attempt = min(self.attempt + 1, 64)
        return delay * (1.0 - self.jitter * random.random())

    def reset(self) -> None:
        self.attempt = 0


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff | None = None,
    give_up_after: float | None = None,
    retry_all: bool = False,
) -> T:
    """Run `call` until it succeeds; retryable ExplorerErrors (all of them with `retry_all`)
    are retried with back-off and logged; after `give_up_after` seconds the last error is raised.
    """
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            return await call()
        except ExplorerError as exc:
            if not (exc.retryable or retry_all):
                raise
            delay = backoff.next_delay()
            if give_up_after is not None and loop.time() - started + delay > give_up_after:
                raise
            log.warning("%s failed: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)


def _replacing_loads(content: bytes) -> Any:
    return json.loads(content.decode("utf-8", "replace"))


def decode_poll_body(content: bytes) -> Any:
    """A poll answer's JSON, invalid UTF-8 replaced (U+FFFD), as it always was; through
    `fastjson` (orjson where it reads the same: a page of 200 workloads in half the time)."""
    return fastjson.loads(content, _replacing_loads)


def _reason(status: int, reason: str | None) -> str:
    """The standard phrase of a status (what httpx reported), else the server's own."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return reason or ""


def error_text(status: int, reason: str | None, head: bytes) -> str:
    """The `{"error": ...}` text of a failed answer, else its first bytes, else the reason."""
    try:
        doc = json.loads(head[:ERROR_HEAD])
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    text = head[:200].decode("utf-8", "replace").strip()
    return text or _reason(status, reason)


def _content_encoded(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The (decoded) body, or None as soon as it is known to exceed `limit` bytes.

    Never holds more than `limit` + one chunk in memory: a declared plain length is checked
    before reading, anything else (chunked, compressed, until-close) is read chunk by chunk.
    """
    length = response.content_length
    if length is not None and not _content_encoded(response):
        return None if length > limit else await response.read()
    body = bytearray()
    while chunk := await response.content.read(_CHUNK):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read an ignored answer (`null`) so its connection goes back to the pool; a huge one is
    abandoned instead (its connection is then closed, not reused)."""
    await _read_limited(response, MAX_BODY)


async def _body(response: aiohttp.ClientResponse) -> bytes | None:
    return await _read_limited(response, MAX_BODY)


def ssl_context() -> ssl.SSLContext:
    """The trust store httpx used (SSL_CERT_FILE, SSL_CERT_DIR, else certifi's bundle), so the
    move to aiohttp changes no gateway's idea of which explorer certificates are valid."""
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        if where := os.environ.get(variable):
            try:
                if variable == "SSL_CERT_FILE":
                    return ssl.create_default_context(cafile=where)
                return ssl.create_default_context(capath=where)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"{variable}={where}: no usable CA certificates: {exc}") from None
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx, a dependency
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def env_proxy(base: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy httpx took from the environment (HTTP(S)_PROXY, NO_PROXY) for the explorer.

    Looked up once: every request goes to the same origin, and aiohttp's `trust_env` would
    look it up (and read ~/.netrc, whose credentials clash with the signature header) on a
    worker thread for every request.
    """
    try:
        return get_env_proxy_for_url(URL(base))
    except LookupError:
        return None, None


class ExplorerClient:
    """Signed calls to one explorer over a keep-alive connection pool.

    The aiohttp session is opened on first use, inside the running event loop (aiohttp binds a
    session to the loop that creates it); `aclose()` closes it and the client for good.
    """

    def __init__(
        self,
        url: str,
        identity: Signer,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_error: Callable[[str], None] | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"explorer timeout {timeout!r} must be a positive number of seconds")
        self.base = base_url(url)
        self.identity = identity
        self.timeout = float(timeout)
        self._node = quote(identity.node_id, safe="")
        self._on_error = on_error
        self._pool_size = pool_size
        # built now, as httpx did, so a broken trust store stops the start, not every request
        self._ssl: ssl.SSLContext | bool = ssl_context() if self.base.startswith("https:") else True
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.put_via: Callable[[str, bytes], Awaitable[None]] | None = None
        """What sends result PUTs instead of this client (`sender.PutSender.put_result`: the
        same request from a child process); it raises the ExplorerError this client would."""

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise RuntimeError("explorer client is closed")
            proxy, proxy_auth = env_proxy(self.base)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
                # the Go client sends bodies without a Content-Type (spec §1)
                skip_auto_headers=("Content-Type",),
                proxy=proxy,
                proxy_auth=proxy_auth,
                # as the Go client (no cookie jar): cookies are neither kept nor sent, and no
                # request filters a jar for its URL
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def url(self, *segments: str) -> str:
        return self.base + "".join("/" + quote(s, safe="") for s in segments)

    async def _request(
        self,
        call: str,
        method: str,
        segments: Sequence[str],
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        expect: int,
        body: Any = None,
        raw: bytes | None = None,
        signed: bool = True,
        query: str = "",
    ) -> T:
        """One request; `read` turns the expected answer into the result, inside the timeout.

        The URL goes out exactly as built here (`encoded=True`: no re-quoting, no dot-segment
        folding), with no redirect followed.
        """
        url = self.url(*segments)
        headers = sign_headers(self.identity) if signed else None
        content = gojson.encode(body) if body is not None else raw
        session = self._open()
        try:
            async with session.request(
                method,
                URL(url + query, encoded=True),
                data=content,
                headers=headers,
                allow_redirects=False,
            ) as response:
                if response.status != expect:
                    raise await self._status_error(call, method, url, response)
                return await read(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._count(call)
            if isinstance(exc, TimeoutError):
                detail = f"no complete answer within {self.timeout:g} s"
            else:
                detail = str(exc) or type(exc).__name__
            raise ExplorerError(
                f"{method} {url}: request failure: {detail}", retryable=True
            ) from exc

    async def _status_error(
        self, call: str, method: str, url: str, response: aiohttp.ClientResponse
    ) -> ExplorerError:
        self._count(call)
        status = response.status
        head = bytearray()
        try:
            while len(head) < ERROR_HEAD and (
                chunk := await response.content.read(ERROR_HEAD - len(head))
            ):
                head += chunk
        except (aiohttp.ClientError, TimeoutError):
            pass  # the status says enough; the text is a courtesy
        return ExplorerError(
            f"{method} {url}: HTTP {status}: {error_text(status, response.reason, bytes(head))}",
            status=status,
            retryable=status >= 500 or status in (408, 429),
        )

    def _count(self, call: str) -> None:
        if self._on_error is not None:
            self._on_error(call)

    async def register(self, gateway: Mapping[str, Any]) -> None:
        """POST /gateways (201): unauthenticated upsert of the gateway record."""
        await self._request("register", "POST", ["gateways"], _drain, expect=201, body=gateway)

    async def update_uptime(self, uptime: int) -> None:
        await self._request(
            "uptime",
            "POST",
            ["gateways", self.identity.node_id, "uptime"],
            _drain,
            expect=200,
            body={"uptime": int(uptime)},
        )

    async def update_reserved_resources(self, counters: Mapping[str, int]) -> None:
        await self._request(
            "reserved_resources",
            "POST",
            ["gateways", self.identity.node_id, "reserved_resources"],
            _drain,
            expect=200,
            body=reserved_resources_body(counters),
        )

    async def poll(self, from_id: int) -> PollResult:
        """GET the node's workloads from `from_id` (unsigned, as the Go client does)."""
        return await self._request(
            "poll",
            "GET",
            ["reservations", "nodes", self.identity.node_id, "workloads"],
            self._read_poll,
            expect=200,
            signed=False,
            query=f"?from={int(from_id)}",
        )

    async def _read_poll(self, response: aiohttp.ClientResponse) -> PollResult:
        raw_last = response.headers.get("X-Last-Id")
        last_id = 0
        if raw_last is not None:
            try:
                last_id = int(raw_last)
            except ValueError:
                self._count("poll")
                raise PollDecodeError(
                    f"poll: X-Last-Id {raw_last[:40]!r} is not a number"
                ) from None
        content = await _read_limited(response, MAX_POLL_BODY)
        if content is None:
            self._count("poll")
            size = response.content_length
            what = f"{size} bytes" if size is not None else f"more than {MAX_POLL_BODY} bytes"
            raise PollDecodeError(f"poll: body of {what} is too large (limit {MAX_POLL_BODY})")
        try:
            doc = decode_poll_body(content)
        except (ValueError, RecursionError) as exc:
            self._count("poll")
            raise PollDecodeError(f"poll: body is not valid JSON: {exc}") from None
        if doc is None:
            doc = []
        if not isinstance(doc, list):
            self._count("poll")
            raise PollDecodeError(f"poll: body is a JSON {type(doc).__name__}, not an array")
        return PollResult(items=doc, last_id=last_id)

    async def put_result(self, gwid: str, body: bytes) -> None:
        """PUT a result body (Go-encoded, with its newline) built and persisted by the caller."""
        if self.put_via is not None:
            try:
                await self.put_via(gwid, body)
            except SenderUnavailableError:
                pass  # made here instead, below
            except ExplorerError:
                self._count("put_result")
                raise
            else:
                return
        await self._request(
            "put_result",
            "PUT",
            ["reservations", "nodes", self.identity.node_id, "workloads", gwid],
            _drain,
            expect=201,
            raw=body,
        )

    async def delete_workload(self, gwid: str) -> None:
        await self._request(
            "delete",
            "DELETE",
            ["reservations", "nodes", self.identity.node_id, "workloads", gwid],
            _drain,
            expect=200,
        )

    async def get_user(self, tid: int) -> User:
        # imported here: the result sender's child process (sender.py) never asks for a user,
        # and pydantic would be 11 MB of its memory
        from pydantic import ValidationError

        from tfgateway.explorer.models import User

        content = await self._request("get_user", "GET", ["users", str(tid)], _body, expect=200)
        if content is None:
            raise ExplorerError(
                f"user {tid}: answer larger than {MAX_BODY} bytes", status=200, retryable=False
            )
        try:
            return User.model_validate(json.loads(content))
        except (ValueError, ValidationError, RecursionError) as exc:
            raise ExplorerError(f"user {tid}: malformed answer: {exc}", retryable=False) from None
