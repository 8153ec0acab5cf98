"""The development explorer's HTTP server (aiohttp): explorer endpoints + `/dev/` admin API.

Explorer endpoints answer exactly as the real TFExplorer does (spec §3): JSON + "\\n" bodies,
`null` for nothing, `{"error": …}` with the real status codes, `X-Last-Id` on polls, signatures
checked on the two routes the explorer protects. The admin API lets tests, the demo and operators
add users and workloads, mark deletions, inspect what the gateway sent and inject faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from aiohttp import web
from pydantic import BaseModel, ValidationError

from tfgateway_devexplorer.faults import (
    Decision,
    Endpoint,
    FaultInjector,
    FaultPlan,
    corrupt_body,
    mangle_items,
    truncate_body,
)
from tfgateway_devexplorer.netns import listening_socket
from tfgateway_devexplorer.persistence import StateFile, StateFileError, apply_op, b64
from tfgateway_devexplorer.signatures import CHALLENGE, Headers, SignatureError, verify
from tfgateway_devexplorer.specs import (
    NEXT_DELETE,
    SeedFile,
    UserSpec,
    WorkloadSpec,
    describe_validation_error,
)
from tfgateway_devexplorer.store import ExplorerError, Store, Workload
from tfgateway_devexplorer.wire import encode

log = logging.getLogger("tfgateway_devexplorer")

API = "/api/v1"
_ROUTE_ENDPOINTS: dict[str, Endpoint] = {
    "register": "register",
    "uptime": "uptime",
    "reserved_resources": "reserved_resources",
    "poll": "poll",
    "result": "result",
    "delete": "delete",
    "user": "user",
}
_M = TypeVar("_M", bound=BaseModel)
_FAULT = web.RequestKey("fault", Decision)
_FROM_RE = re.compile(r"[0-9]+")
_GO_NOT_FOUND = b"404 page not found\n"


class LoadError(Exception):
    """A `--load` or `--state` file that cannot be used (message says why and where)."""


def _json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=encode(obj), status=status, headers=headers, content_type="application/json"
    )


def _admin_response(obj: Any, status: int = 200) -> web.Response:
    """Admin answers: plain JSON through the C encoder (large states, no Go fidelity needed)."""
    body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    return web.Response(body=body, status=status, content_type="application/json")


def _views_response(store: Store, workloads: list[Workload], status: int = 200) -> web.Response:
    """Admin workload views (a list): each one's poll item spliced in as already-encoded text."""
    body = "[" + ",".join(store.summary_json(w) for w in workloads) + "]\n"
    return web.Response(body=body.encode(), status=status, content_type="application/json")


def _view_response(store: Store, workload: Workload) -> web.Response:
    body = store.summary_json(workload) + "\n"
    return web.Response(body=body.encode(), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json_response({"error": message}, status)


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the client's connection without any answer (faults `down`, `drop_*`).

    The transport is aborted; the empty response returned afterwards is never written.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=204)


def _journaled(value: Any) -> Any:
    if isinstance(value, bytes):
        return b64(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


class DevExplorer:
    """One development explorer: store, fault injector, HTTP app, listener."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: Path | None = None,
        netns: Sequence[str] = (),
    ) -> None:
        self.store = store or Store()
        self.faults = FaultInjector()
        self.host = host
        self.port = port
        self.netns = tuple(netns)  # also listen on host:port inside these network namespaces
        self.state = StateFile(state_file) if state_file is not None else None
        self._runner: web.AppRunner | None = None
        self._sites: list[web.BaseSite] = []
        self._pause_task: asyncio.Task[None] | None = None
        self._pause_starter: asyncio.Task[None] | None = None
        self.app = self._build_app()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to give the agent (`--explorer`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API}"

    @property
    def admin_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        """Listen on host:port, then on the same address and port in each `netns`."""
        assert self._runner is not None
        try:
            site: web.BaseSite = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
            self._sites.append(site)
            if self.port == 0:
                # asyncio's Server, or uvloop's (no subclass of it): both have `sockets`
                server = cast("asyncio.Server", site._server)
                self.port = int(server.sockets[0].getsockname()[1])
            for name in self.netns:
                sock = listening_socket(name, self.host, self.port)
                site = web.SockSite(self._runner, sock)
                try:
                    await site.start()
                except BaseException:
                    sock.close()
                    raise
                self._sites.append(site)
        except BaseException:
            await self._stop_listening()  # all or nothing
            raise
        where = "".join(f" and in network namespace {name}" for name in self.netns)
        log.info("development explorer listening on %s%s", self.admin_url, where)

    async def _stop_listening(self) -> None:
        sites, self._sites = self._sites, []
        for site in sites:
            with contextlib.suppress(Exception):
                await site.stop()

    async def stop(self) -> None:
        """Stop serving and write a final snapshot (when `--state` is used)."""
        for task in (self._pause_starter, self._pause_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.save_state()
        if self.state is not None:
            self.state.close()

    async def pause(self, seconds: float) -> None:
        """Stop listening (connections refused, open ones closed) for `seconds`, then resume."""
        if self._pause_task is not None and not self._pause_task.done():
            self._pause_task.cancel()  # a new pause replaces the running one
        await self._stop_listening()
        if self._runner is not None and self._runner.server is not None:
            for connection in list(self._runner.server.connections):
                connection.force_close()
        log.warning("listener paused for %.1f s", seconds)
        self._pause_task = asyncio.create_task(self._resume_after(seconds))

    async def _resume_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        while self._runner is not None:
            try:
                await self._listen()
            except OSError as exc:  # someone took the port meanwhile: keep trying
                log.error("cannot listen again on %s:%s: %s", self.host, self.port, exc)
                await asyncio.sleep(1.0)
                continue
            log.warning("listener resumed")
            return

    # -- persistence ---------------------------------------------------------------------

    def _apply(self, op: str, **args: Any) -> Any:
        """Apply one change to the store, journaling it first when `--state` is used.

        Request bodies are passed as bytes, specs as validated models; the journal holds them
        as base64 text and as JSON objects (validated again when replayed)."""
        entry = {"op": op, "time": time.time(), "args": args}
        if self.state is not None:
            journaled = {k: _journaled(v) for k, v in args.items()}
            self.state.record({**entry, "args": journaled})
        try:
            return apply_op(self.store, entry)
        finally:
            if self.state is not None and self.state.needs_compaction:
                self.state.compact(self.store)

    def load_state(self) -> bool:
        """Restore from `--state` (snapshot + journal) if present; True when it did."""
        if self.state is None:
            return False
        try:
            found = self.state.restore(self.store)
        except StateFileError as exc:
            raise LoadError(str(exc)) from None
        self.state.compact(self.store)
        return found

    def save_state(self) -> None:
        """Write a full snapshot now (also done at stop; changes are journaled anyway)."""
        if self.state is not None:
            self.state.compact(self.store)

    def load_seed_file(self, path: Path) -> tuple[int, int]:
        """Add the users and workloads of a `--load` file; returns (users, workloads) added."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        try:
            seed = SeedFile.model_validate(raw)
        except ValidationError as exc:
            raise LoadError(f"{path}: {describe_validation_error(exc)}") from None
        try:
            for user in seed.users:
                self._apply("add_user", spec=user)
            for workload in seed.workloads:
                self._apply("add_workload", spec=workload)
        except ExplorerError as exc:
            raise LoadError(f"{path}: {exc.message}") from None
        return len(seed.users), len(seed.workloads)

    # -- app -----------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._faults_middleware],
            client_max_size=16 * 1024 * 1024,
        )
        r = app.router
        r.add_post(f"{API}/gateways", self._register, name="register")
        r.add_post(f"{API}/gateways/{{node_id}}/uptime", self._uptime, name="uptime")
        r.add_post(
            f"{API}/gateways/{{node_id}}/reserved_resources",
            self._reserved_resources,
            name="reserved_resources",
        )
        r.add_get(f"{API}/reservations/nodes/{{node_id}}/workloads", self._poll, name="poll")
        gwid_path = f"{API}/reservations/nodes/{{node_id}}/workloads/{{gwid:[0-9]+-[0-9]+}}"
        r.add_put(gwid_path, self._put_result, name="result")
        r.add_delete(gwid_path, self._put_deleted, name="delete")
        r.add_get(f"{API}/users/{{tid}}", self._user, name="user")
        # admin API
        r.add_get("/dev/health", self._admin_health)
        r.add_post("/dev/users", self._admin_add_users)
        r.add_get("/dev/users", self._admin_list_users)
        r.add_post("/dev/workloads", self._admin_add_workloads)
        r.add_get("/dev/workloads", self._admin_list_workloads)
        r.add_get("/dev/workloads/{id:[0-9]+}", self._admin_get_workload)
        r.add_post("/dev/workloads/{id:[0-9]+}/delete", self._admin_delete_workload)
        r.add_delete("/dev/workloads/{id:[0-9]+}", self._admin_delete_workload)
        r.add_post("/dev/workloads/{id:[0-9]+}/next_action", self._admin_next_action)
        r.add_get("/dev/state", self._admin_state)
        r.add_get("/dev/progress", self._admin_progress)
        r.add_get("/dev/faults", self._admin_get_faults)
        r.add_put("/dev/faults", self._admin_set_faults)
        r.add_delete("/dev/faults", self._admin_clear_faults)
        r.add_post("/dev/listener/pause", self._admin_pause)
        r.add_post("/dev/reset", self._admin_reset)
        return app

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route_name = request.match_info.route.name
        endpoint = _ROUTE_ENDPOINTS.get(route_name or "")
        decision = self.faults.decide(endpoint) if endpoint is not None else Decision()
        request[_FAULT] = decision
        try:
            if decision.latency:
                await asyncio.sleep(decision.latency)
            if decision.drop_before:
                return _drop(request)
            if decision.error_status is not None:
                return _error(decision.error_status, "injected fault")
            try:
                response = await handler(request)
            except web.HTTPNotFound:
                if request.path.startswith("/dev/"):
                    raise
                response = web.Response(
                    body=_GO_NOT_FOUND, status=404, content_type="text/plain", charset="utf-8"
                )
            except web.HTTPMethodNotAllowed:
                if request.path.startswith("/dev/"):
                    raise
                response = web.Response(status=405)
            if decision.slow_answer:
                # handled and stored: only the answer is late (the client may have given up)
                await asyncio.sleep(decision.slow_answer)
            if decision.drop_after:
                return _drop(request)
            if (decision.truncate or decision.malformed) and isinstance(response, web.Response):
                body = response.body if isinstance(response.body, bytes) else b""
                new = truncate_body(body) if decision.truncate else corrupt_body(body)
                response = web.Response(
                    body=new,
                    status=response.status,
                    headers={k: v for k, v in response.headers.items() if k.lower() == "x-last-id"},
                    content_type="application/json",
                )
            return response
        except web.HTTPException:
            raise
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return _error(500, "internal error in the development explorer")

    # -- explorer endpoints --------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self._apply("register", body=body)
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        log.info("gateway registered")
        return _json_response(None, 201)

    def _authenticate(self, request: web.Request) -> str | web.Response:
        headers = Headers(list(request.headers.items()))
        try:
            return verify(
                headers,
                method=request.method,
                path=request.path_qs,
                host=request.host,
            )
        except SignatureError as exc:
            # Go sets no Content-Type here, so net/http sniffs it as text/plain.
            return web.Response(
                body=encode({"error": f"unauthorized access: {exc}"}),
                status=401,
                headers={"WWW-Authenticate": CHALLENGE},
                content_type="text/plain",
                charset="utf-8",
            )

    async def _uptime(self, request: web.Request) -> web.Response:
        key_id = self._authenticate(request)
        if isinstance(key_id, web.Response):
            return key_id
        body = await request.read()
        try:
            self._apply("uptime", node_id=request.match_info["node_id"], key_id=key_id, body=body)
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _json_response(None)

    async def _reserved_resources(self, request: web.Request) -> web.Response:
        key_id = self._authenticate(request)
        if isinstance(key_id, web.Response):
            return key_id
        body = await request.read()
        try:
            self._apply(
                "reserved_resources",
                node_id=request.match_info["node_id"],
                key_id=key_id,
                body=body,
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _json_response(None)

    async def _poll(self, request: web.Request) -> web.Response:
        values = request.query.getall("from", [])
        if not values or not _FROM_RE.fullmatch(values[0]):
            # gorilla/mux: the route requires from=\d+, otherwise nothing matches
            return web.Response(
                body=_GO_NOT_FOUND, status=404, content_type="text/plain", charset="utf-8"
            )
        try:
            workloads, last_id = self.store.poll(request.match_info["node_id"], values[0])
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        decision = request[_FAULT]
        items: list[Any] = [self.store.poll_item(w) for w in workloads]
        items = mangle_items(items, decision)
        body = encode(items if items else None)
        return web.Response(
            body=body,
            status=200,
            headers={"X-Last-Id": str(last_id)},
            content_type="application/json",
        )

    async def _put_result(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self._apply(
                "put_result",
                node_id=request.match_info["node_id"],
                gwid=request.match_info["gwid"],
                body=body,
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _json_response(None, 201)

    async def _put_deleted(self, request: web.Request) -> web.Response:
        try:
            self._apply(
                "put_deleted",
                node_id=request.match_info["node_id"],
                gwid=request.match_info["gwid"],
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _json_response(None)

    async def _user(self, request: web.Request) -> web.Response:
        try:
            user = self.store.get_user(request.match_info["tid"])
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _json_response(user.wire())

    # -- admin API -----------------------------------------------------------------------

    @staticmethod
    async def _admin_body(request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExplorerError(400, f"request body is not valid JSON: {exc}") from None

    @staticmethod
    def _validate(model: type[_M], value: Any, where: str = "") -> _M:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            raise ExplorerError(400, describe_validation_error(exc, where)) from None

    async def _admin_health(self, request: web.Request) -> web.Response:
        return _admin_response({"ok": True, "explorer_url": self.url})

    async def _admin_add_users(self, request: web.Request) -> web.Response:
        try:
            body = await self._admin_body(request)
            many = isinstance(body, list)
            items = body if many else [body]
            specs = [
                self._validate(UserSpec, item, f"[{i}]." if many else "")
                for i, item in enumerate(items)
            ]
            users = [self._apply("add_user", spec=spec) for spec in specs]
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _admin_response([u.wire() for u in users], 201)

    async def _admin_list_users(self, request: web.Request) -> web.Response:
        return _admin_response([u.wire() for u in self.store.users.values()])

    async def _admin_add_workloads(self, request: web.Request) -> web.Response:
        try:
            body = await self._admin_body(request)
            many = isinstance(body, list)
            items = body if many else [body]
            specs = [
                self._validate(WorkloadSpec, item, f"[{i}]." if many else "")
                for i, item in enumerate(items)
            ]
            workloads = [self._apply("add_workload", spec=spec) for spec in specs]
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _views_response(self.store, workloads, 201)

    def _selected(self, request: web.Request) -> list[Workload]:
        query = request.query
        selected = []
        for workload_id in sorted(self.store.workloads):
            workload = self.store.workloads[workload_id]
            if "node_id" in query and workload.node_id != query["node_id"]:
                continue
            if "type" in query and workload.type_name != query["type"]:
                continue
            if "next_action" in query and str(workload.next_action) != query["next_action"]:
                continue
            selected.append(workload)
        return selected

    async def _admin_list_workloads(self, request: web.Request) -> web.Response:
        return _views_response(self.store, self._selected(request))

    async def _admin_get_workload(self, request: web.Request) -> web.Response:
        try:
            workload = self.store.workload(int(request.match_info["id"]))
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _view_response(self.store, workload)

    async def _admin_delete_workload(self, request: web.Request) -> web.Response:
        try:
            workload = self._apply(
                "set_next_action", id=int(request.match_info["id"]), next_action=NEXT_DELETE
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _view_response(self.store, workload)

    async def _admin_next_action(self, request: web.Request) -> web.Response:
        try:
            body = await self._admin_body(request)
            value = body.get("next_action") if isinstance(body, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                raise ExplorerError(400, 'body must be {"next_action": 0..255}')
            workload = self._apply(
                "set_next_action", id=int(request.match_info["id"]), next_action=value
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _view_response(self.store, workload)

    async def _admin_state(self, request: web.Request) -> web.Response:
        # store.state() plus `faults` and `time`, its large parts encoded once (store.state_json)
        extra = json.dumps(
            {"faults": self.faults.status(), "time": time.time()}, separators=(",", ":")
        )
        body = self.store.state_json()[:-1] + "," + extra[1:] + "\n"
        return web.Response(body=body.encode(), content_type="application/json")

    async def _admin_progress(self, request: web.Request) -> web.Response:
        node_id = request.query.get("node_id", "")
        if not node_id:
            return _error(400, "node_id is required: /dev/progress?node_id=<gateway node id>")
        return _admin_response(self.store.progress(node_id))

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return _admin_response(self.faults.status())

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            plan = self._validate(FaultPlan, await self._admin_body(request))
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        self.faults.set_plan(plan)
        log.warning("fault plan set: %s", plan.model_dump(exclude_defaults=True))
        return _admin_response(self.faults.status())

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return _admin_response(self.faults.status())

    async def _admin_pause(self, request: web.Request) -> web.Response:
        try:
            body = await self._admin_body(request)
            seconds = body.get("seconds") if isinstance(body, dict) else None
            if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                raise ExplorerError(400, 'body must be {"seconds": N}')
            if not 0 < seconds <= 3600:
                raise ExplorerError(400, "seconds must be in (0, 3600]")
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        # answer first, then stop listening
        self._pause_starter = asyncio.create_task(self._pause_soon(float(seconds)))
        return _admin_response({"paused_for": seconds})

    async def _pause_soon(self, seconds: float) -> None:
        await asyncio.sleep(0.05)  # let the admin answer reach the client
        await self.pause(seconds)

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self._apply("reset")
        self.faults.clear()
        return _admin_response({"ok": True})
