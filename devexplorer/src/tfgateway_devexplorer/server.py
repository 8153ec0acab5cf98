"""The development explorer's HTTP server: explorer endpoints + `/dev/` admin API.

Explorer endpoints answer exactly as the real TFExplorer does (spec §3): JSON + "\\n" bodies,
`null` for nothing, `{"error": …}` with the real status codes, `X-Last-Id` on polls, signatures
checked on the two routes the explorer protects. The admin API lets tests, the demo and operators
add users and workloads, mark deletions, inspect what the gateway sent and inject faults.
HTTP itself is `http11` (httptools); the routes, the Go-style 404 and 405 answers of the
explorer's paths, aiohttp's of `/dev/` and the fault injection are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from tfgateway_devexplorer.faults import (
    NO_FAULTS,
    Decision,
    Endpoint,
    FaultInjector,
    FaultPlan,
    corrupt_body,
    mangle_items,
    truncate_body,
)
from tfgateway_devexplorer.http11 import DROP, Answer, HTTPServer, Request, Result
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
from tfgateway_devexplorer.store import ExplorerError, Store, Workload, compact_json
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
_FROM_RE = re.compile(r"[0-9]+")
_JSON = ("Content-Type", "application/json")
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_GO_NOT_FOUND = Answer(404, b"404 page not found\n", (_TEXT,))
_GO_NOT_ALLOWED = Answer(405)  # net/http's 405 of gorilla/mux: no body, no Content-Type
_NOT_FOUND = Answer(404, b"404: Not Found", (_TEXT,))  # aiohttp's, for /dev/
_NULL = {status: Answer(status, b"null\n", (_JSON,)) for status in (200, 201)}
Handler = Callable[[Request], Answer]
_SEGMENT = "[^{}/]+"  # aiohttp's `{name}`
_WORKLOAD_SPECS = TypeAdapter(list[WorkloadSpec])
_COLLECT_EVERY = 100_000  # changes between full collections when the collector is frozen out


class LoadError(Exception):
    """A `--load` or `--state` file that cannot be used (message says why and where)."""


def _json_response(obj: Any, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> Answer:
    return Answer(status, encode(obj), (*headers, _JSON))


def _admin_response(obj: Any, status: int = 200) -> Answer:
    """Admin answers: plain JSON through the C encoder (large states, no Go fidelity needed)."""
    body = compact_json(obj).encode() + b"\n"
    return Answer(status, body, (_JSON,))


def _views_response(store: Store, workloads: list[Workload], status: int = 200) -> Answer:
    """Admin workload views (a list): each one's poll item spliced in as already-encoded text."""
    body = "[" + ",".join(store.summary_json(w) for w in workloads) + "]\n"
    return Answer(status, body.encode(), (_JSON,))


def _view_response(store: Store, workload: Workload) -> Answer:
    body = store.summary_json(workload) + "\n"
    return Answer(200, body.encode(), (_JSON,))


def _error(status: int, message: str) -> Answer:
    return _json_response({"error": message}, status)


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
        freeze_gc: bool = False,
    ) -> None:
        self.store = store or Store()
        self.faults = FaultInjector()
        self.host = host
        self.port = port
        self.netns = tuple(netns)  # also listen on host:port inside these network namespaces
        self.state = StateFile(state_file) if state_file is not None else None
        self.http: HTTPServer | None = None
        self.freeze_gc = freeze_gc
        self._changes_frozen = 0
        self._pause_task: asyncio.Task[None] | None = None
        self._pause_starter: asyncio.Task[None] | None = None
        self._routes = self._build_routes()

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
        self.http = HTTPServer(self.respond)
        await self._listen()

    async def _listen(self) -> None:
        """Listen on host:port, then on the same address and port in each `netns`."""
        assert self.http is not None
        try:
            self.port = await self.http.listen(self.host, self.port)
            for name in self.netns:
                sock = listening_socket(name, self.host, self.port)
                try:
                    await self.http.listen_on(sock)
                except BaseException:
                    sock.close()
                    raise
        except BaseException:
            self.http.stop_listening()  # all or nothing
            raise
        where = "".join(f" and in network namespace {name}" for name in self.netns)
        log.info("development explorer listening on %s%s", self.admin_url, where)

    async def stop(self) -> None:
        """Stop serving and write a final snapshot (when `--state` is used)."""
        for task in (self._pause_starter, self._pause_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.http is not None:
            await self.http.close()
            self.http = None
        self.save_state()
        if self.state is not None:
            self.state.close()

    async def pause(self, seconds: float) -> None:
        """Stop listening (connections refused, open ones closed) for `seconds`, then resume."""
        if self._pause_task is not None and not self._pause_task.done():
            self._pause_task.cancel()  # a new pause replaces the running one
        if self.http is not None:
            self.http.stop_listening()
            self.http.close_connections()
        log.warning("listener paused for %.1f s", seconds)
        self._pause_task = asyncio.create_task(self._resume_after(seconds))

    async def _resume_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        while self.http is not None:
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
            if self.freeze_gc:
                self._freeze()

    def _freeze(self) -> None:
        """Move every object alive after a change out of the cyclic collector's sight.

        The store only grows (workloads, results, histories) and holds no reference cycles;
        with 50,000 workloads the collector's full passes over all of it were a third of the
        explorer's CPU (benchmarks/agent). Frozen objects are still freed by reference
        counting; what could only be freed as a cycle is, by one full collection every
        `_COLLECT_EVERY` changes. For the program (`__main__`), not for tests in process."""
        self._changes_frozen += 1
        if self._changes_frozen >= _COLLECT_EVERY:
            self._changes_frozen = 0
            gc.unfreeze()
            gc.collect()
        gc.freeze()

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

    def _build_routes(self) -> list[tuple[re.Pattern[str], dict[str, tuple[Handler, str | None]]]]:
        """The routes as aiohttp had them: `{name}` is one path segment, a GET route answers
        HEAD too; one regular expression per path with its handlers by method."""
        routes: dict[str, dict[str, tuple[Handler, str | None]]] = {}

        def add(method: str, path: str, handler: Handler, name: str | None = None) -> None:
            pattern = re.sub(
                r"\{(\w+)(?::([^}]+))?\}",
                lambda m: f"(?P<{m[1]}>{m[2] or _SEGMENT})",
                path,
            )
            methods = routes.setdefault(pattern, {})
            methods[method] = (handler, name)
            if method == "GET":
                methods["HEAD"] = (handler, name)

        # the paths of every result PUT and poll first: they are tried in this order
        gwid_path = f"{API}/reservations/nodes/{{node_id}}/workloads/{{gwid:[0-9]+-[0-9]+}}"
        add("PUT", gwid_path, self._put_result, "result")
        add("DELETE", gwid_path, self._put_deleted, "delete")
        add("GET", f"{API}/reservations/nodes/{{node_id}}/workloads", self._poll, "poll")
        add("POST", f"{API}/gateways", self._register, "register")
        add("POST", f"{API}/gateways/{{node_id}}/uptime", self._uptime, "uptime")
        add(
            "POST",
            f"{API}/gateways/{{node_id}}/reserved_resources",
            self._reserved_resources,
            "reserved_resources",
        )
        add("GET", f"{API}/users/{{tid}}", self._user, "user")
        # admin API
        add("GET", "/dev/health", self._admin_health)
        add("POST", "/dev/users", self._admin_add_users)
        add("GET", "/dev/users", self._admin_list_users)
        add("POST", "/dev/workloads", self._admin_add_workloads)
        add("GET", "/dev/workloads", self._admin_list_workloads)
        add("GET", "/dev/workloads/{id:[0-9]+}", self._admin_get_workload)
        add("POST", "/dev/workloads/{id:[0-9]+}/delete", self._admin_delete_workload)
        add("DELETE", "/dev/workloads/{id:[0-9]+}", self._admin_delete_workload)
        add("POST", "/dev/workloads/{id:[0-9]+}/next_action", self._admin_next_action)
        add("GET", "/dev/state", self._admin_state)
        add("GET", "/dev/progress", self._admin_progress)
        add("GET", "/dev/faults", self._admin_get_faults)
        add("PUT", "/dev/faults", self._admin_set_faults)
        add("DELETE", "/dev/faults", self._admin_clear_faults)
        add("POST", "/dev/listener/pause", self._admin_pause)
        add("POST", "/dev/reset", self._admin_reset)
        return [(re.compile(pattern), methods) for pattern, methods in routes.items()]

    def _route(self, request: Request) -> Handler | Answer:
        """The handler of the request (its match_info and route name set), or the 404 / 405
        answer: Go's for the explorer's paths (gorilla/mux and net/http), aiohttp's for /dev/."""
        allowed: set[str] = set()
        for pattern, methods in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            found = methods.get(request.method)
            if found is None:
                allowed.update(methods)
                continue
            request.match_info = match.groupdict()
            request.route = found[1]
            return found[0]
        admin = request.path.startswith("/dev/")
        if not allowed:
            return _NOT_FOUND if admin else _GO_NOT_FOUND
        if not admin:
            return _GO_NOT_ALLOWED
        return Answer(
            405, b"405: Method Not Allowed", (_TEXT, ("Allow", ",".join(sorted(allowed))))
        )

    def respond(self, request: Request) -> Result | Awaitable[Result]:
        """Answer one request: synchronously, unless a fault delays it."""
        handler = self._route(request)
        if isinstance(handler, Answer):
            return handler
        endpoint = _ROUTE_ENDPOINTS.get(request.route or "")
        decision = self.faults.decide(endpoint) if endpoint is not None else NO_FAULTS
        request.fault = decision
        if decision is NO_FAULTS:
            return self._answer(request, handler)
        if not (decision.latency or decision.slow_answer):
            return self._handle(request, handler, decision)
        return self._handle_late(request, handler, decision)

    async def _handle_late(self, request: Request, handler: Handler, decision: Decision) -> Result:
        if decision.latency:
            await asyncio.sleep(decision.latency)
        if decision.drop_before or decision.error_status is not None:
            return self._handle(request, handler, decision)
        answer = self._answer(request, handler)
        if decision.slow_answer:
            # handled and stored: only the answer is late (the client may have given up)
            await asyncio.sleep(decision.slow_answer)
        return self._after(answer, decision)

    def _handle(self, request: Request, handler: Handler, decision: Decision) -> Result:
        if decision.drop_before:
            return DROP
        if decision.error_status is not None:
            return _error(decision.error_status, "injected fault")
        return self._after(self._answer(request, handler), decision)

    @staticmethod
    def _answer(request: Request, handler: Handler) -> Answer:
        try:
            return handler(request)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return _error(500, "internal error in the development explorer")

    @staticmethod
    def _after(answer: Answer, decision: Decision) -> Result:
        if decision.drop_after:
            return DROP
        if decision.truncate or decision.malformed:
            body = truncate_body(answer.body) if decision.truncate else corrupt_body(answer.body)
            kept = tuple((k, v) for k, v in answer.headers if k.lower() == "x-last-id")
            return Answer(answer.status, body, (*kept, _JSON))
        return answer

    # -- explorer endpoints --------------------------------------------------------------

    def _register(self, request: Request) -> Answer:
        body = request.body
        try:
            self._apply("register", body=body)
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        log.info("gateway registered")
        return _NULL[201]

    def _authenticate(self, request: Request) -> str | Answer:
        headers = Headers(request.headers)
        try:
            return verify(
                headers,
                method=request.method,
                path=request.path_qs,
                host=request.host,
            )
        except SignatureError as exc:
            # Go sets no Content-Type here, so net/http sniffs it as text/plain.
            return Answer(
                401,
                encode({"error": f"unauthorized access: {exc}"}),
                (("WWW-Authenticate", CHALLENGE), _TEXT),
            )

    def _uptime(self, request: Request) -> Answer:
        key_id = self._authenticate(request)
        if isinstance(key_id, Answer):
            return key_id
        body = request.body
        try:
            self._apply("uptime", node_id=request.match_info["node_id"], key_id=key_id, body=body)
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _NULL[200]

    def _reserved_resources(self, request: Request) -> Answer:
        key_id = self._authenticate(request)
        if isinstance(key_id, Answer):
            return key_id
        body = request.body
        try:
            self._apply(
                "reserved_resources",
                node_id=request.match_info["node_id"],
                key_id=key_id,
                body=body,
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _NULL[200]

    def _poll(self, request: Request) -> Answer:
        values = request.query.get("from", [])
        if not values or not _FROM_RE.fullmatch(values[0]):
            # gorilla/mux: the route requires from=\d+, otherwise nothing matches
            return _GO_NOT_FOUND
        try:
            workloads, last_id = self.store.poll(request.match_info["node_id"], values[0])
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        items: list[Any] = [self.store.poll_item(w) for w in workloads]
        items = mangle_items(items, request.fault)
        body = encode(items if items else None)
        return Answer(200, body, (("X-Last-Id", str(last_id)), _JSON))

    def _put_result(self, request: Request) -> Answer:
        body = request.body
        try:
            self._apply(
                "put_result",
                node_id=request.match_info["node_id"],
                gwid=request.match_info["gwid"],
                body=body,
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _NULL[201]

    def _put_deleted(self, request: Request) -> Answer:
        try:
            self._apply(
                "put_deleted",
                node_id=request.match_info["node_id"],
                gwid=request.match_info["gwid"],
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _NULL[200]

    def _user(self, request: Request) -> Answer:
        try:
            user = self.store.get_user(request.match_info["tid"])
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _json_response(user.wire())

    # -- admin API -----------------------------------------------------------------------

    @staticmethod
    def _admin_body(request: Request) -> Any:
        try:
            return json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExplorerError(400, f"request body is not valid JSON: {exc}") from None

    @staticmethod
    def _validate(model: type[_M], value: Any, where: str = "") -> _M:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            raise ExplorerError(400, describe_validation_error(exc, where)) from None

    def _admin_health(self, request: Request) -> Answer:
        return _admin_response({"ok": True, "explorer_url": self.url})

    def _admin_add_users(self, request: Request) -> Answer:
        try:
            body = self._admin_body(request)
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

    def _admin_list_users(self, request: Request) -> Answer:
        return _admin_response([u.wire() for u in self.store.users.values()])

    def _admin_add_workloads(self, request: Request) -> Answer:
        try:
            body = self._admin_body(request)
            many = isinstance(body, list)
            items = body if many else [body]
            try:  # a list in one call of the validator; one by one to name what is wrong
                specs = _WORKLOAD_SPECS.validate_python(items)
            except ValidationError:
                specs = [
                    self._validate(WorkloadSpec, item, f"[{i}]." if many else "")
                    for i, item in enumerate(items)
                ]
            workloads = [self._apply("add_workload", spec=spec) for spec in specs]
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _views_response(self.store, workloads, 201)

    def _selected(self, request: Request) -> list[Workload]:
        query = {name: values[0] for name, values in request.query.items()}
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

    def _admin_list_workloads(self, request: Request) -> Answer:
        return _views_response(self.store, self._selected(request))

    def _admin_get_workload(self, request: Request) -> Answer:
        try:
            workload = self.store.workload(int(request.match_info["id"]))
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _view_response(self.store, workload)

    def _admin_delete_workload(self, request: Request) -> Answer:
        try:
            workload = self._apply(
                "set_next_action", id=int(request.match_info["id"]), next_action=NEXT_DELETE
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _view_response(self.store, workload)

    def _admin_next_action(self, request: Request) -> Answer:
        try:
            body = self._admin_body(request)
            value = body.get("next_action") if isinstance(body, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                raise ExplorerError(400, 'body must be {"next_action": 0..255}')
            workload = self._apply(
                "set_next_action", id=int(request.match_info["id"]), next_action=value
            )
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        return _view_response(self.store, workload)

    def _admin_state(self, request: Request) -> Answer:
        # store.state() plus `faults` and `time`, its large parts encoded once (store.state_json)
        extra = json.dumps(
            {"faults": self.faults.status(), "time": time.time()}, separators=(",", ":")
        )
        body = self.store.state_json()[:-1] + "," + extra[1:] + "\n"
        return Answer(200, body.encode(), (_JSON,))

    def _admin_progress(self, request: Request) -> Answer:
        node_id = next(iter(request.query.get("node_id", [])), "")
        if not node_id:
            return _error(400, "node_id is required: /dev/progress?node_id=<gateway node id>")
        return _admin_response(self.store.progress(node_id))

    def _admin_get_faults(self, request: Request) -> Answer:
        return _admin_response(self.faults.status())

    def _admin_set_faults(self, request: Request) -> Answer:
        try:
            plan = self._validate(FaultPlan, self._admin_body(request))
        except ExplorerError as exc:
            return _error(exc.status, exc.message)
        self.faults.set_plan(plan)
        log.warning("fault plan set: %s", plan.model_dump(exclude_defaults=True))
        return _admin_response(self.faults.status())

    def _admin_clear_faults(self, request: Request) -> Answer:
        self.faults.clear()
        return _admin_response(self.faults.status())

    def _admin_pause(self, request: Request) -> Answer:
        try:
            body = self._admin_body(request)
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

    def _admin_reset(self, request: Request) -> Answer:
        self._apply("reset")
        self.faults.clear()
        return _admin_response({"ok": True})
