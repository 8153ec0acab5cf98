"""A small HTTP client for tests: aiohttp (the agent's one HTTP library) for async tests,
urllib for the synchronous ones, both returning the same `Response`.

Tests speak to the development explorer as a client would; this keeps those calls short
(`await http.put(path, content=body)`, `response.status_code`, `response.json()`).
"""

from __future__ import annotations

import json as jsonlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp

__all__ = ["AsyncHTTP", "Response", "SyncHTTP"]

Params = Mapping[str, str | int | float]


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


def _body(json: Any, content: bytes | str | None) -> tuple[bytes | None, dict[str, str]]:
    if json is not None:
        return jsonlib.dumps(json).encode(), {"Content-Type": "application/json"}
    if isinstance(content, str):
        return content.encode(), {}
    return content, {}


def _query(params: Params | None) -> str:
    return "?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()}) if params else ""


class AsyncHTTP:
    """`async with AsyncHTTP(base_url) as http: r = await http.get("/path")`."""

    def __init__(self, base_url: str = "", *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per request, as aiohttp takes it
    ) -> Response:
        """One request; aiohttp's errors propagate (`ServerDisconnectedError` for a dropped
        connection, `TimeoutError`, `ClientConnectorError` for a refused one)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        data, extra = _body(json, content)
        async with self._session.request(
            method,
            self.base_url + url + _query(params),
            data=data,
            headers={**extra, **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=timeout) if timeout is not None else None,
        ) as response:
            return Response(response.status, await response.read(), dict(response.headers))

    async def get(self, url: str, **kw: Any) -> Response:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> Response:
        return await self.request("POST", url, **kw)

    async def put(self, url: str, **kw: Any) -> Response:
        return await self.request("PUT", url, **kw)

    async def delete(self, url: str, **kw: Any) -> Response:
        return await self.request("DELETE", url, **kw)


class SyncHTTP:
    """The same calls, blocking (urllib), for tests that are not coroutines."""

    def __init__(self, base_url: str = "", *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Params | None = None,
    ) -> Response:
        data, headers = _body(json, content)
        req = urllib.request.Request(  # noqa: S310 - the tests' own http:// URLs
            self.base_url + url + _query(params), data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310
                return Response(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read(), dict(exc.headers))

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> Response:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> Response:
        return self.request("DELETE", url, **kw)
