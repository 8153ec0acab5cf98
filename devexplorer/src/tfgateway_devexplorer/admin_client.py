"""Typed async client for the development explorer's `/dev/` admin API.

Used by tests, the demo and benchmarks to publish users and workloads, mark deletions, inspect
what the gateway reported and inject faults. Accepts the server root or the explorer base URL
(`http://h:p`, `http://h:p/`, `http://h:p/api/v1`, `…/api/v1/`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp


class AdminError(Exception):
    """The admin API refused a request; `status` and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"dev explorer answered {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class WorkloadInfo:
    """A workload as the admin API reports it."""

    id: int
    gwid: str
    type: str
    node_id: str
    customer_tid: int
    next_action: int
    queued: bool
    result: dict[str, Any]
    wire: Any

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkloadInfo:
        return cls(
            id=int(data["id"]),
            gwid=str(data["gwid"]),
            type=str(data["type"]),
            node_id=str(data["node_id"]),
            customer_tid=int(data["customer_tid"]),
            next_action=int(data["next_action"]),
            queued=bool(data["queued"]),
            result=dict(data["result"]),
            wire=data["wire"],
        )

    @property
    def state(self) -> int:
        """Result state: 0 error (also "no result yet"), 1 ok, 2 deleted."""
        return int(self.result["state"])

    @property
    def answered(self) -> bool:
        """True once the gateway PUT a result (or DELETEd) for this workload."""
        return bool(self.result.get("workload_id"))


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    pubkey: str


def root_url(url: str) -> str:
    """Server root from either the root or the explorer base URL (spec §1 rule, reversed)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class AdminClient:
    """`async with AdminClient(url) as admin: await admin.create_workload(...)`."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.root = root_url(url)
        self.explorer_url = self.root + "/api/v1"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None  # made in the loop that uses it

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        if self._http is None:
            self._http = aiohttp.ClientSession(self.root, timeout=self._timeout)
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with self._http.request(method, path, json=body, params=query) as response:
            raw = await response.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if response.status >= 400:
            message = raw.decode("utf-8", "replace")
            if isinstance(data, dict) and "error" in data:
                message = str(data["error"])
            raise AdminError(response.status, message)
        if data is None and raw.strip() != b"null":
            raise AdminError(response.status, f"not JSON: {raw[:200]!r}")
        return data

    # -- users ---------------------------------------------------------------------------

    async def create_user(
        self, pubkey_hex: str, *, name: str | None = None, user_id: int | None = None
    ) -> UserInfo:
        """Add a phonebook user; the id comes from the global counter unless given."""
        body: dict[str, Any] = {"pubkey": pubkey_hex}
        if name is not None:
            body["name"] = name
        if user_id is not None:
            body["id"] = user_id
        (data,) = await self._call("POST", "/dev/users", body)
        return UserInfo(id=int(data["id"]), name=str(data["name"]), pubkey=str(data["pubkey"]))

    # -- workloads -----------------------------------------------------------------------

    async def create_workload(
        self, workload_type: str | int, node_id: str, customer_tid: int, **fields: Any
    ) -> WorkloadInfo:
        """Publish one workload. `fields`: type fields (domain, ips, addr, port, port_tls,
        secret, public_key) and any other WorkloadSpec key (id, workload_id, reference,
        next_action, version, epoch, overrides, remove, raw, ...)."""
        body = {"type": workload_type, "node_id": node_id, "customer_tid": customer_tid, **fields}
        (data,) = await self._call("POST", "/dev/workloads", body)
        return WorkloadInfo.from_json(data)

    async def create_workloads(self, specs: list[dict[str, Any]]) -> list[WorkloadInfo]:
        """Publish many workloads in one request (each a WorkloadSpec JSON object)."""
        data = await self._call("POST", "/dev/workloads", specs)
        return [WorkloadInfo.from_json(item) for item in data]

    async def subdomain(
        self, node_id: str, customer_tid: int, domain: str, ips: list[str], **extra: Any
    ) -> WorkloadInfo:
        return await self.create_workload(
            "subdomain", node_id, customer_tid, domain=domain, ips=ips, **extra
        )

    async def delegate(
        self, node_id: str, customer_tid: int, domain: str, **extra: Any
    ) -> WorkloadInfo:
        return await self.create_workload(
            "domain_delegate", node_id, customer_tid, domain=domain, **extra
        )

    async def proxy(
        self,
        node_id: str,
        customer_tid: int,
        domain: str,
        addr: str,
        port: int,
        port_tls: int = 0,
        **extra: Any,
    ) -> WorkloadInfo:
        return await self.create_workload(
            "proxy",
            node_id,
            customer_tid,
            domain=domain,
            addr=addr,
            port=port,
            port_tls=port_tls,
            **extra,
        )

    async def reverse_proxy(
        self, node_id: str, customer_tid: int, domain: str, secret_hex: str, **extra: Any
    ) -> WorkloadInfo:
        """`secret_hex`: from `user_crypto.encrypt_secret` (the version decides the scheme)."""
        return await self.create_workload(
            "reverse_proxy", node_id, customer_tid, domain=domain, secret=secret_hex, **extra
        )

    async def gateway4to6(
        self, node_id: str, customer_tid: int, public_key: str, **extra: Any
    ) -> WorkloadInfo:
        return await self.create_workload(
            "gateway4to6", node_id, customer_tid, public_key=public_key, **extra
        )

    async def delete_workload(self, workload_id: int) -> WorkloadInfo:
        """What a user's delete does: next_action → 4, the gateway sees it on its next poll."""
        return WorkloadInfo.from_json(
            await self._call("POST", f"/dev/workloads/{workload_id}/delete")
        )

    async def set_next_action(self, workload_id: int, next_action: int) -> WorkloadInfo:
        data = await self._call(
            "POST", f"/dev/workloads/{workload_id}/next_action", {"next_action": next_action}
        )
        return WorkloadInfo.from_json(data)

    async def get_workload(self, workload_id: int) -> WorkloadInfo:
        return WorkloadInfo.from_json(await self._call("GET", f"/dev/workloads/{workload_id}"))

    async def list_workloads(
        self,
        *,
        node_id: str | None = None,
        workload_type: str | None = None,
        next_action: int | None = None,
    ) -> list[WorkloadInfo]:
        data = await self._call(
            "GET", "/dev/workloads", node_id=node_id, type=workload_type, next_action=next_action
        )
        return [WorkloadInfo.from_json(item) for item in data]

    async def wait_for_result(
        self,
        workload_id: int,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for polling, not a request timeout
        *,
        predicate: Callable[[WorkloadInfo], bool] | None = None,
        interval: float = 0.05,
    ) -> WorkloadInfo:
        """Poll until the gateway answered the workload (or `predicate` holds); TimeoutError
        after `timeout` seconds, with the last seen state in the message."""
        check = predicate or (lambda info: info.answered)
        deadline = time.monotonic() + timeout
        while True:
            info = await self.get_workload(workload_id)
            if check(info):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"workload {workload_id} not answered after {timeout}s "
                    f"(next_action={info.next_action}, result={info.result})"
                )
            await asyncio.sleep(interval)

    async def wait_for_deleted(
        self,
        workload_id: int,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for polling
    ) -> WorkloadInfo:
        """Poll until the gateway DELETEd the workload (next_action 6, result state 2)."""
        return await self.wait_for_result(
            workload_id, timeout, predicate=lambda info: info.next_action == 6
        )

    # -- inspection, faults, listener ----------------------------------------------------

    async def state(self) -> dict[str, Any]:
        """Registered gateways, uptime/reserved_resources posts, result PUT and DELETE history
        (with timestamps and status), per-workload results and next_actions, polls, faults."""
        data: dict[str, Any] = await self._call("GET", "/dev/state")
        return data

    async def progress(self, node_id: str) -> dict[str, Any]:
        """`GET /dev/progress`: a node's workloads, queued ones, results by state, the time of
        its last accepted result PUT and its poll count (small, unlike `state()`)."""
        data = await self._call("GET", "/dev/progress", node_id=node_id)
        if not isinstance(data, dict):
            raise AdminError(200, f"unexpected /dev/progress answer: {data!r}")
        return data

    async def health(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/dev/health")
        return data

    async def set_faults(self, **plan: Any) -> dict[str, Any]:
        """Replace the fault plan (see faults.FaultPlan for the keys); returns its status."""
        data: dict[str, Any] = await self._call("PUT", "/dev/faults", plan)
        return data

    async def clear_faults(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("DELETE", "/dev/faults")
        return data

    async def faults(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/dev/faults")
        return data

    async def pause_listener(self, seconds: float) -> None:
        """Stop listening for `seconds` (connections refused), then resume by itself."""
        await self._call("POST", "/dev/listener/pause", {"seconds": seconds})

    async def reset(self) -> None:
        """Forget every user, workload, gateway and history entry; clear faults."""
        await self._call("POST", "/dev/reset")
