"""The explorer's HTTP API as the gateway uses it (explorer spec §1-3), over httpx.

Same paths, bodies (Go `json.Encoder` bytes) and accepted status codes as the Go client, with
what the Go client lacks: a timeout on every request and a clear split between errors worth
retrying (transport failures, 5xx, 429) and errors that will never succeed. Retry policy lives
with the callers (`Backoff`, `retrying`): the poll loop, the outbox and registration differ.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import ValidationError

from tfgateway import gojson
from tfgateway.httpsig import Signer, sign_headers
from tfgateway.models import Location, User

__all__ = [
    "COUNTER_KEYS",
    "DEFAULT_EXPLORER",
    "Backoff",
    "ExplorerClient",
    "ExplorerError",
    "PollDecodeError",
    "PollResult",
    "base_url",
    "gateway_body",
    "reserved_resources_body",
    "retrying",
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

T = TypeVar("T")


class ExplorerError(Exception):
    """A failed explorer call; `retryable` says whether the same call may succeed later."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


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


def _error_text(response: httpx.Response) -> str:
    try:
        doc = json.loads(response.content[:4096])
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])
    except (ValueError, UnicodeDecodeError):
        pass
    text = response.content[:200].decode("utf-8", "replace").strip()
    return text or response.reason_phrase


class ExplorerClient:
    """Signed calls to one explorer. `transport` lets tests inject an httpx mock transport."""

    def __init__(
        self,
        url: str,
        identity: Signer,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.base = base_url(url)
        self.identity = identity
        self._node = quote(identity.node_id, safe="")
        self._on_error = on_error
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "tfgateway/2"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, *segments: str) -> str:
        return self.base + "".join("/" + quote(s, safe="") for s in segments)

    async def _request(
        self,
        call: str,
        method: str,
        segments: Sequence[str],
        *,
        expect: int,
        body: Any = None,
        raw: bytes | None = None,
        signed: bool = True,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        headers = sign_headers(self.identity) if signed else {}
        content = gojson.encode(body) if body is not None else raw
        try:
            response = await self._http.request(
                method, self.url(*segments), content=content, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            self._count(call)
            detail = str(exc) or type(exc).__name__
            raise ExplorerError(
                f"{method} {self.url(*segments)}: request failure: {detail}", retryable=True
            ) from exc
        if response.status_code != expect:
            self._count(call)
            status = response.status_code
            raise ExplorerError(
                f"{method} {self.url(*segments)}: HTTP {status}: {_error_text(response)}",
                status=status,
                retryable=status >= 500 or status in (408, 429),
            )
        return response

    def _count(self, call: str) -> None:
        if self._on_error is not None:
            self._on_error(call)

    async def register(self, gateway: Mapping[str, Any]) -> None:
        """POST /gateways (201): unauthenticated upsert of the gateway record."""
        await self._request("register", "POST", ["gateways"], expect=201, body=gateway)

    async def update_uptime(self, uptime: int) -> None:
        await self._request(
            "uptime",
            "POST",
            ["gateways", self.identity.node_id, "uptime"],
            expect=200,
            body={"uptime": int(uptime)},
        )

    async def update_reserved_resources(self, counters: Mapping[str, int]) -> None:
        await self._request(
            "reserved_resources",
            "POST",
            ["gateways", self.identity.node_id, "reserved_resources"],
            expect=200,
            body=reserved_resources_body(counters),
        )

    async def poll(self, from_id: int) -> PollResult:
        """GET the node's workloads from `from_id` (unsigned, as the Go client does)."""
        response = await self._request(
            "poll",
            "GET",
            ["reservations", "nodes", self.identity.node_id, "workloads"],
            expect=200,
            signed=False,
            params={"from": str(from_id)},
        )
        raw_last = response.headers.get("X-Last-Id")
        try:
            last_id = int(raw_last) if raw_last is not None else 0
        except ValueError:
            self._count("poll")
            raise PollDecodeError(f"poll: X-Last-Id {raw_last[:40]!r} is not a number") from None
        if len(response.content) > MAX_POLL_BODY:
            self._count("poll")
            raise PollDecodeError(f"poll: body of {len(response.content)} bytes is too large")
        try:
            doc = json.loads(response.content.decode("utf-8", "replace"))
        except ValueError as exc:
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
        await self._request(
            "put_result",
            "PUT",
            ["reservations", "nodes", self.identity.node_id, "workloads", gwid],
            expect=201,
            raw=body,
        )

    async def delete_workload(self, gwid: str) -> None:
        await self._request(
            "delete",
            "DELETE",
            ["reservations", "nodes", self.identity.node_id, "workloads", gwid],
            expect=200,
        )

    async def get_user(self, tid: int) -> User:
        response = await self._request("get_user", "GET", ["users", str(tid)], expect=200)
        try:
            return User.model_validate(json.loads(response.content))
        except (ValueError, ValidationError) as exc:
            raise ExplorerError(f"user {tid}: malformed answer: {exc}", retryable=False) from None
