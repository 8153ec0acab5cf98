"""State and semantics of the development explorer, without any HTTP.

Each method mirrors one handler of the real TFExplorer (spec §3, EX `pkg/workloads/reservation.go`,
`pkg/directory/gateway_handlers.go`, `pkg/phonebook/user.go`) so the HTTP layer only parses paths
and renders bodies. Everything here is synchronous: the HTTP server runs it on one event loop,
which makes every operation atomic.
"""

from __future__ import annotations

import bisect
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

import base58

from tfgateway_devexplorer.godecode import (
    DecodeError,
    compact,
    decode_struct,
    raw_members,
    read_one_value,
    sole_member_text,
)
from tfgateway_devexplorer.specs import (
    NEXT_DELETE,
    NEXT_DELETED,
    NEXT_DEPLOY,
    STATE_DELETED,
    STATE_ERROR,
    STATE_OK,
    TYPE_NAMES,
    UserSpec,
    WorkloadSpec,
)
from tfgateway_devexplorer.wire import RawJSON, go_string, marshal, marshal_text

MAX_PAGE_SIZE = 200  # EX pkg/workloads/reservation.go `workloads` maxPageSize
_SURROGATE = re.compile("[\ud800-\udfff]")


class ExplorerError(Exception):
    """A request the explorer answers with an error status and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Result:
    """Wire `workloads.Result` (spec §7), Go field order."""

    category: int = 0
    workload_id: str = ""
    data_json: str = "null"  # raw, compact JSON text
    signature: str = ""
    state: int = 0
    message: str = ""
    epoch: int = 0
    node_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        """`dataclasses.asdict(self)` (every field is a scalar), without its deep copy."""
        return {
            "category": self.category,
            "workload_id": self.workload_id,
            "data_json": self.data_json,
            "signature": self.signature,
            "state": self.state,
            "message": self.message,
            "epoch": self.epoch,
            "node_id": self.node_id,
        }

    def wire(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "workload_id": self.workload_id,
            "data_json": RawJSON(self.data_json),
            "signature": self.signature,
            "state": self.state,
            "message": self.message,
            "epoch": self.epoch,
            "node_id": self.node_id,
        }


@dataclass
class Workload:
    """A new-style explorer workload (spec §4) plus the bookkeeping the explorer keeps."""

    id: int
    workload_id: int
    node_id: str
    workload_type: int
    customer_tid: int
    next_action: int = NEXT_DEPLOY
    pool_id: int = 0
    reference: str = ""
    description: str = ""
    json_text: str = ""
    customer_signature: str = ""
    epoch: int = 0
    metadata: str = ""
    version: int = 2
    result: Result = field(default_factory=Result)
    type_fields: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] | None = None
    remove: list[str] | None = None
    raw: str | None = None
    queued: bool = True  # in the node's work queue until a result or delete arrives

    @property
    def gwid(self) -> str:
        """`<id>-<workload_id>`, the ID results and deletes are addressed to."""
        return f"{self.id}-{self.workload_id}"

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.workload_type, str(self.workload_type))

    def wire(self) -> dict[str, Any]:
        """The JSON object the explorer serves, keys in Go order (spec §4.2, §4.3)."""
        obj: dict[str, Any] = {
            "workload_id": self.workload_id,
            "node_id": self.node_id,
            "pool_id": self.pool_id,
            "reference": self.reference,
            "description": self.description,
            "signing_request_provision": {"signers": [], "quorum_min": 0},
            "signing_request_delete": {"signers": [], "quorum_min": 0},
            "id": self.id,
            "json": self.json_text,
            "customer_tid": self.customer_tid,
            "customer_signature": self.customer_signature,
            "next_action": self.next_action,
            "signatures_provision": [],
            "signature_farmer": {"tid": 0, "signature": "", "epoch": 0},
            "signatures_delete": [],
            "epoch": self.epoch,
            "metadata": self.metadata,
            "result": self.result.wire(),
            "workload_type": self.workload_type,
            "version": self.version,
        }
        obj.update(self.type_fields)
        if self.overrides:
            obj.update(self.overrides)
        for key in self.remove or ():
            obj.pop(key, None)
        return obj

    def _plain(self) -> bool:
        """Every value of `wire()` has its usual type and nothing rewrites its keys."""
        r = self.result
        ints = (
            self.workload_id, self.pool_id, self.id, self.customer_tid, self.next_action,
            self.epoch, self.workload_type, self.version, r.category, r.state, r.epoch,
        )  # fmt: skip
        strs = (
            self.node_id, self.reference, self.description, self.json_text,
            self.customer_signature, self.metadata, r.workload_id, r.data_json,
            r.signature, r.message, r.node_id,
        )  # fmt: skip
        return (
            not self.overrides
            and not self.remove
            and set(map(type, ints)) == _INT
            and set(map(type, strs)) == _STR
            and _COMMON_KEYS.isdisjoint(self.type_fields)
        )

    def wire_text(self) -> str:
        """`marshal(self.wire())` as text, the usual workload through one format string
        (about 5x faster; a 5,000-workload run encodes each one at least once). Workloads
        with `overrides`, `remove` or unusual values take the general path."""
        if not self._plain():
            return marshal_text(self.wire())
        r = self.result
        s = go_string
        result = (
            f'{{"category":{r.category},"workload_id":{s(r.workload_id)},'
            f'"data_json":{r.data_json},"signature":{s(r.signature)},"state":{r.state},'
            f'"message":{s(r.message)},"epoch":{r.epoch},"node_id":{s(r.node_id)}}}'
        )
        text = (
            f'{{"workload_id":{self.workload_id},"node_id":{s(self.node_id)},'
            f'"pool_id":{self.pool_id},"reference":{s(self.reference)},'
            f'"description":{s(self.description)},'
            '"signing_request_provision":{"signers":[],"quorum_min":0},'
            '"signing_request_delete":{"signers":[],"quorum_min":0},'
            f'"id":{self.id},"json":{s(self.json_text)},"customer_tid":{self.customer_tid},'
            f'"customer_signature":{s(self.customer_signature)},'
            f'"next_action":{self.next_action},"signatures_provision":[],'
            '"signature_farmer":{"tid":0,"signature":"","epoch":0},"signatures_delete":[],'
            f'"epoch":{self.epoch},"metadata":{s(self.metadata)},"result":{result},'
            f'"workload_type":{self.workload_type},"version":{self.version}'
        )
        if not self.type_fields:
            return text + "}"
        return text + "," + _fields_text(self.type_fields)[1:]


_INT = {int}
_STR = {str}


def _fields_text(fields: dict[str, Any]) -> str:
    """`marshal_text(fields)` for a type's usual fields (strings, integers, lists of strings)
    without the general encoder's recursion; anything else through it."""
    s = go_string
    parts = []
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            parts.append(f"{s(key)}:{s(value)}")
        elif kind is int:
            parts.append(f"{s(key)}:{value}")
        elif kind is list and set(map(type, value)) <= _STR:
            parts.append(f"{s(key)}:[{','.join(map(s, value))}]")
        else:
            return marshal_text(fields)
    return "{" + ",".join(parts) + "}"


_COMMON_KEYS = frozenset(
    Workload(id=1, workload_id=1, node_id="", workload_type=0, customer_tid=0).wire()
)


@dataclass
class User:
    """Phonebook user (spec §3.7)."""

    id: int
    name: str
    pubkey: str
    email: str = ""
    host: str = ""
    description: str = ""

    def wire(self) -> dict[str, Any]:
        # The explorer hides the e-mail from callers that are not the user; `signature` is
        # never stored, so always omitted.
        return {
            "id": self.id,
            "name": self.name,
            "email": "",
            "pubkey": self.pubkey,
            "host": self.host,
            "description": self.description,
        }


# Go struct descriptions used to decode request bodies like the real handlers.
_LOCATION = {
    "city": "string",
    "country": "string",
    "continent": "string",
    "latitude": "float64",
    "longitude": "float64",
}
_WORKLOAD_AMOUNT = dict.fromkeys(
    (
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
    ),
    "uint16",
)
_GATEWAY_FIELDS = {
    "id": "int64",
    "node_id": "string",
    "farm_id": "int64",
    "os_version": "string",
    "created": "date",
    "updated": "date",
    "uptime": "int64",
    "address": "string",
    "public_key_hex": "string",
    "managed_domains": "[]string",
    "tcp_router_port": "int64",
    "dns_nameserver": "[]string",
    "free_to_use": "bool",
}
_GATEWAY_NESTED = {
    "location": ("directory.Location", _LOCATION),
    "workloads": ("directory.WorkloadAmount", _WORKLOAD_AMOUNT),
}
_RESERVED_FIELDS = {
    "cru": "uint64",
    "mru": "float64",
    "hru": "float64",
    "sru": "float64",
    **_WORKLOAD_AMOUNT,
}
_RESULT_FIELDS = {
    "category": "uint8",
    "workload_id": "string",
    "data_json": "raw",
    "signature": "string",
    "state": "uint8",
    "message": "string",
    "epoch": "date",
    "node_id": "string",
}


def _decode(body: bytes, struct: str, fields: dict[str, str], nested: Any = None) -> dict[str, Any]:
    try:
        return decode_struct(read_one_value(body), struct, fields, nested or {})
    except DecodeError as exc:
        raise ExplorerError(400, str(exc)) from None


def _raw_data_json(body: bytes) -> str:
    """`data_json` exactly as the gateway sent it, compacted the way Go re-emits a RawMessage."""
    sole = sole_member_text(body, "data_json")  # the usual body: found without a scan
    if sole is not None:
        return compact(sole)
    members = raw_members(body)
    key = "data_json" if "data_json" in members else None
    if key is None:  # Go matches keys case-insensitively; the last match wins
        matches = [k for k in members if k.lower() == "data_json"]
        key = matches[-1] if matches else None
    return compact(members[key]) if key is not None else "null"


_ADMIN_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""What `json.dumps(value, separators=(",", ":"))` builds on every call, built once."""


def compact_json(value: Any) -> str:
    """Admin JSON: compact, through the C encoder (no Go fidelity needed there)."""
    return _ADMIN_ENCODER.encode(value)


class _EncodedHistory:
    """JSON text of a history list (`result_puts`, …), each entry encoded once.

    The lists are append-only and their entries never change once appended; a list that is
    replaced (reset, restore) or shorter than what was encoded starts the encoding over.
    """

    def __init__(self) -> None:
        self._source: list[dict[str, Any]] | None = None
        self._parts: list[str] = []

    def text(self, items: list[dict[str, Any]]) -> str:
        if self._source is not items or len(self._parts) > len(items):
            self._source = items
            self._parts = []
        parts = self._parts
        for item in items[len(parts) :]:
            parts.append(compact_json(item))
        return "[" + ",".join(parts) + "]"


def _parse_id(text: str) -> int:
    """Go `strconv.ParseInt(text, 10, 64)` as the explorer's parseID uses it."""
    try:
        value = int(text, 10)
    except ValueError:
        raise ExplorerError(
            400, f'invalid id format: strconv.ParseInt: parsing "{text}": invalid syntax'
        ) from None
    if not -(2**63) <= value <= 2**63 - 1:
        raise ExplorerError(
            400, f'invalid id format: strconv.ParseInt: parsing "{text}": value out of range'
        )
    return value


_COUNT_KEYS = ("workloads", "queued", "none", "ok", "error", "deleted")


class Store:
    """Everything the development explorer knows, and the real explorer's rules over it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.revision = 0  # bumped on every change
        self.reset()

    def reset(self) -> None:
        """Forget everything (admin `/dev/reset`)."""
        self.counter = 0  # one counter for workloads and users (the reservation counter)
        self.gateway_counter = 0
        self.users: dict[int, User] = {}
        self.workloads: dict[int, Workload] = {}
        self._ids: list[int] = []  # sorted keys of `workloads` (see _sorted_ids)
        self.gateways: dict[str, dict[str, Any]] = {}
        self.uptime_posts: list[dict[str, Any]] = []
        self.reserved_posts: list[dict[str, Any]] = []
        self.result_puts: list[dict[str, Any]] = []
        self.deletes: list[dict[str, Any]] = []
        self.polls: dict[str, dict[str, Any]] = {}
        self._wire: dict[int, RawJSON] = {}  # encoded poll item per workload id
        self._admin_wire: dict[int, str] = {}  # the same, as the admin API shows it
        self._admin_result: dict[int, str] = {}  # `{result}` of GET /dev/state and views
        self._histories = {
            name: _EncodedHistory()
            for name in ("uptime_posts", "reserved_posts", "result_puts", "deletes")
        }
        self._progress_reset()
        self._changed()

    def _progress_reset(self) -> None:
        """Forget the progress counts: every workload counts again at the next `progress`."""
        self._counts: dict[str, dict[str, int]] = {}  # per node: workloads, queued, states
        self._counted: dict[int, tuple[str, int, str]] = {}  # id → (node, queued, state)
        self._uncounted: set[int] = set(self.workloads)  # changed since they were counted

    def _touch(self, workload: Workload) -> None:
        """Forget the cached encodings of a workload that changed (and count it again)."""
        self._wire.pop(workload.id, None)
        self._admin_wire.pop(workload.id, None)
        self._admin_result.pop(workload.id, None)
        self._uncounted.add(workload.id)

    def poll_item(self, workload: Workload) -> RawJSON:
        """The workload's poll JSON, encoded once per change (polls are frequent, changes few)."""
        item = self._wire.get(workload.id)
        if item is None:
            text = workload.raw if workload.raw is not None else workload.wire_text()
            item = self._wire[workload.id] = RawJSON(text)
        return item

    def admin_wire(self, workload: Workload) -> str:
        """The poll item as JSON text for admin answers: the item itself when it is JSON (every
        encoded one; a hostile `raw` one may not be), else a JSON string holding its text.
        Invalid UTF-8 a gateway sent in `data_json` (lone surrogates here, raw bytes on the
        wire) is shown as `\\udcXX` escapes, admin answers being UTF-8."""
        text = self._admin_wire.get(workload.id)
        if text is None:
            text = self.poll_item(workload).text
            if workload.raw is not None:
                try:
                    json.loads(text)
                except ValueError:
                    text = json.dumps(text)
            if not text.isascii() and _SURROGATE.search(text) is not None:
                text = compact_json(json.loads(text))
            self._admin_wire[workload.id] = text
        return text

    def render_poll(self, workloads: list[Workload]) -> bytes:
        """Poll body without the newline: `null` for none (Go nil slice), else the array."""
        if not workloads:
            return b"null"
        return marshal([self.poll_item(w) for w in workloads])

    def _now(self) -> int:
        return int(self.clock())

    def _changed(self) -> None:
        self.revision += 1

    def _next_id(self) -> int:
        self.counter += 1
        while self.counter in self.workloads or self.counter in self.users:
            self.counter += 1
        return self.counter

    def _claim_id(self, wanted: int | None, kind: str) -> int:
        if wanted is None:
            return self._next_id()
        if wanted in self.workloads or wanted in self.users:
            raise ExplorerError(409, f"{kind} id {wanted} is already used")
        self.counter = max(self.counter, wanted)
        return wanted

    # -- admin side ----------------------------------------------------------------------

    def add_user(self, spec: UserSpec) -> User:
        user_id = self._claim_id(spec.id, "user")
        user = User(
            id=user_id,
            name=spec.name if spec.name is not None else f"user{user_id}.3bot",
            pubkey=spec.pubkey,
            email=spec.email,
            host=spec.host,
            description=spec.description,
        )
        self.users[user_id] = user
        self._changed()
        return user

    def add_workload(self, spec: WorkloadSpec) -> Workload:
        workload_id = self._claim_id(spec.id, "workload")
        type_number = spec.type_number
        workload = Workload(
            id=workload_id,
            workload_id=spec.workload_id,
            node_id=spec.node_id,
            workload_type=type_number,
            customer_tid=spec.customer_tid,
            next_action=spec.next_action,
            pool_id=spec.pool_id,
            reference=spec.reference,
            description=spec.description,
            json_text=spec.json_text,
            customer_signature=spec.customer_signature,
            epoch=spec.epoch if spec.epoch is not None else self._now(),
            metadata=spec.metadata,
            version=spec.version,
            type_fields=spec.type_fields(type_number),
            overrides=spec.overrides,
            remove=spec.remove,
            raw=spec.raw,
            queued=spec.next_action in (NEXT_DEPLOY, NEXT_DELETE),
        )
        self.workloads[workload_id] = workload
        self._touch(workload)
        self._changed()
        return workload

    def workload(self, workload_id: int) -> Workload:
        try:
            return self.workloads[workload_id]
        except KeyError:
            raise ExplorerError(404, f"workload {workload_id} not found") from None

    def set_next_action(self, workload_id: int, next_action: int) -> Workload:
        """Admin: what a user's delete (or the pool planner) does: next_action → 4, etc.

        Like the explorer (EX `setWorkloadDelete`, `WorkloadToDeploy`, capacity planner),
        moving a workload to deploy or delete also pushes it onto its node's work queue: that
        is how a gateway whose cursor is already past the workload's id learns about it.
        """
        workload = self.workload(workload_id)
        workload.next_action = next_action
        self._touch(workload)
        if next_action in (NEXT_DEPLOY, NEXT_DELETE):
            workload.queued = True
        self._changed()
        return workload

    # -- gateway side (the real explorer's handlers) -------------------------------------

    def register_gateway(self, body: bytes) -> None:
        """POST /gateways: unauthenticated upsert keyed by node_id (EX `GatewayCreate`)."""
        gateway = _decode(body, "directory.Gateway", _GATEWAY_FIELDS, _GATEWAY_NESTED)
        node_id = gateway.get("node_id", "")
        # Validation failures are plain errors in the real handler → HTTP 500.
        if not node_id:
            raise ExplorerError(500, "node_is is required")
        if not gateway.get("os_version", ""):
            raise ExplorerError(500, "os_version is required")
        public_key_hex = gateway.get("public_key_hex", "")
        if not public_key_hex:
            raise ExplorerError(500, "public_key_hex is required")
        try:
            public_key = bytes.fromhex(public_key_hex)
        except ValueError as exc:
            raise ExplorerError(500, f"fail to decode public key: {exc}") from None
        if node_id != base58.b58encode(public_key).decode():
            raise ExplorerError(500, "nodeID and public key does not match")
        location = gateway.get("location", {})
        if not any(location.get(key) for key in _LOCATION):
            raise ExplorerError(500, "location is required")
        now = self._now()
        current = self.gateways.get(node_id)
        if current is None:
            self.gateway_counter += 1
            gateway["id"] = self.gateway_counter
            gateway["created"] = now
        else:
            gateway["id"] = current["id"]
            gateway["created"] = current["created"]
        gateway["updated"] = now
        gateway["registrations"] = (current or {}).get("registrations", 0) + 1
        self.gateways[node_id] = gateway
        self._changed()

    def _require_gateway(self, node_id: str) -> None:
        if node_id not in self.gateways:
            raise ExplorerError(404, f"gateway '{node_id}' not found")

    def gateway_uptime(self, node_id: str, key_id: str, body: bytes) -> None:
        """POST /gateways/{id}/uptime after the signature check (EX `updateUptimeHandler`)."""
        self._require_gateway(node_id)
        if node_id != key_id:
            raise ExplorerError(
                403,
                f"trying to register uptime for nodeID {node_id} while you are {key_id}",
            )
        decoded = _decode(body, "struct { Uptime uint64 }", {"uptime": "uint64"})
        uptime = decoded.get("uptime", 0)
        self.gateways[node_id]["uptime"] = uptime
        self.uptime_posts.append({"node_id": node_id, "uptime": uptime, "time": self.clock()})
        self._changed()

    def gateway_reserved_resources(self, node_id: str, key_id: str, body: bytes) -> None:
        """POST /gateways/{id}/reserved_resources after the signature check."""
        self._require_gateway(node_id)
        if node_id != key_id:
            raise ExplorerError(
                403,
                f"trying to update reserved capacity for nodeID {node_id} while you are {key_id}",
            )
        decoded = _decode(body, "struct { ResourceAmount; WorkloadAmount }", _RESERVED_FIELDS)
        amounts = {key: decoded.get(key, 0) for key in _RESERVED_FIELDS}
        self.gateways[node_id]["reserved_resources"] = amounts
        self.reserved_posts.append({"node_id": node_id, **amounts, "time": self.clock()})
        self._changed()

    def poll(self, node_id: str, from_text: str) -> tuple[list[Workload], int]:
        """GET /reservations/nodes/{id}/workloads?from=N → (workloads, X-Last-Id).

        Workloads of this node with id >= from whose next_action is deploy or delete, up to 200,
        X-Last-Id = id of the last one; when none qualifies, the node's queued (never answered)
        workloads; when still none, X-Last-Id = the global counter.
        """
        last_id = _parse_id(from_text)
        found: list[Workload] = []
        ids = self._sorted_ids()
        for workload_id in ids[bisect.bisect_left(ids, last_id) :]:
            workload = self.workloads[workload_id]
            if workload.node_id != node_id:
                continue
            if workload.next_action not in (NEXT_DEPLOY, NEXT_DELETE):
                continue
            found.append(workload)
            last_id = workload_id
            if len(found) >= MAX_PAGE_SIZE:
                break
        if not found:
            for workload_id in ids:
                workload = self.workloads[workload_id]
                if workload.queued and workload.node_id == node_id:
                    found.append(workload)
                    last_id = max(last_id, workload.id)
                    if len(found) >= MAX_PAGE_SIZE:
                        break
        if not found:
            last_id = self.counter
        record = self.polls.setdefault(node_id, {"count": 0})
        record.update(
            count=record["count"] + 1,
            last_from=from_text,
            last_id=last_id,
            last_returned=len(found),
            time=self.clock(),
        )
        return found, last_id

    def _sorted_ids(self) -> list[int]:
        """The workload ids in order, sorted again only after workloads were added (they are
        never removed one by one): a poll from N then starts at N instead of scanning every
        workload below it, which made the polls of a 50,000-workload catch-up quadratic."""
        if len(self._ids) != len(self.workloads):
            self._ids = sorted(self.workloads)
        return self._ids

    def progress(self, node_id: str) -> dict[str, Any]:
        """Admin `GET /dev/progress`: how far a node got with its workloads, small enough to
        ask for often during a run of 50,000 (`/dev/state` carries every result PUT)."""
        self._count_changed()
        counts = self._counts.get(node_id, {})
        count, queued = counts.get("workloads", 0), counts.get("queued", 0)
        states = {state: counts.get(state, 0) for state in ("none", "ok", "error", "deleted")}
        last_put = next(
            (
                put["time"]
                for put in reversed(self.result_puts)
                if put["node_id"] == node_id and put["status"] == 201
            ),
            None,
        )
        return {
            "node_id": node_id,
            "workloads": count,
            "queued": queued,
            "results": states,
            "result_puts": len(self.result_puts),
            "last_result_put": last_put,
            "polls": self.polls.get(node_id, {}).get("count", 0),
        }

    def _count_changed(self) -> None:
        """Bring the per-node counts of `progress` up to date: only the workloads changed
        since the last call are counted again (every change goes through `_touch`), so a
        progress query during a run of 50,000 results walks what changed, not every one."""
        names = {STATE_ERROR: "error", STATE_OK: "ok", STATE_DELETED: "deleted"}
        for workload_id in self._uncounted:
            before = self._counted.pop(workload_id, None)
            if before is not None:
                counts = self._counts[before[0]]
                counts["workloads"] -= 1
                counts["queued"] -= before[1]
                counts[before[2]] -= 1
            workload = self.workloads.get(workload_id)
            if workload is None:
                continue
            result = workload.result
            # a result or a delete addressed to the workload set its id (the gwid)
            state = names.get(result.state, "error") if result.workload_id else "none"
            queued = int(workload.queued)
            counts = self._counts.setdefault(workload.node_id, dict.fromkeys(_COUNT_KEYS, 0))
            counts["workloads"] += 1
            counts["queued"] += queued
            counts[state] += 1
            self._counted[workload_id] = (workload.node_id, queued, state)
        self._uncounted.clear()

    def _find_for_node_call(self, gwid: str) -> Workload:
        rid = _parse_id(gwid.split("-")[0])
        workload = self.workloads.get(rid)
        if workload is None:
            raise ExplorerError(404, "workload not found")
        if workload.gwid != gwid:
            raise ExplorerError(404, "workload id does not exist")
        return workload

    def put_result(self, node_id: str, gwid: str, body: bytes) -> None:
        """PUT /reservations/nodes/{id}/workloads/{gwid} (EX `newStyleWorkloadPutResult`)."""
        decoded = _decode(body, "workloads.Result", _RESULT_FIELDS)
        now = self.clock()
        try:
            workload = self._find_for_node_call(gwid)
        except ExplorerError as exc:
            self.result_puts.append(
                {"node_id": node_id, "gwid": gwid, "status": exc.status, "time": now}
            )
            raise
        result = Result(
            category=decoded.get("category", 0),
            workload_id=gwid,
            data_json=_raw_data_json(body) if "data_json" in decoded else "null",
            signature=decoded.get("signature", ""),
            state=decoded.get("state", 0),
            message=decoded.get("message", ""),
            epoch=int(now),
            node_id=node_id,
        )
        workload.result = result
        workload.queued = False
        self._touch(workload)
        if result.state == STATE_ERROR:
            workload.next_action = NEXT_DELETE
        self.result_puts.append(
            {
                "node_id": node_id,
                "gwid": gwid,
                "status": 201,
                "time": now,
                "result": result.as_dict(),
                "body": body.decode("utf-8", "replace"),
            }
        )
        self._changed()

    def put_deleted(self, node_id: str, gwid: str) -> None:
        """DELETE /reservations/nodes/{id}/workloads/{gwid} (EX `newStyleWorkloadPutDeleted`)."""
        now = self.clock()
        try:
            workload = self._find_for_node_call(gwid)
        except ExplorerError as exc:
            self.deletes.append(
                {"node_id": node_id, "gwid": gwid, "status": exc.status, "time": now}
            )
            raise
        if workload.result.workload_id != gwid:
            workload.result = Result(workload_id=gwid, epoch=int(now))
        workload.result.state = STATE_DELETED
        workload.queued = False
        workload.next_action = NEXT_DELETED
        self._touch(workload)
        self.deletes.append({"node_id": node_id, "gwid": gwid, "status": 200, "time": now})
        self._changed()

    def get_user(self, tid_text: str) -> User:
        """GET /users/{tid}."""
        user = self.users.get(_parse_id(tid_text))
        if user is None:
            raise ExplorerError(404, "mongo: no documents in result")
        return user

    # -- inspection and persistence ------------------------------------------------------

    def summary(self, workload: Workload) -> dict[str, Any]:
        """Admin view of a workload: its wire JSON plus bookkeeping."""
        return {
            "id": workload.id,
            "gwid": workload.gwid,
            "type": workload.type_name,
            "node_id": workload.node_id,
            "customer_tid": workload.customer_tid,
            "next_action": workload.next_action,
            "queued": workload.queued,
            "result": workload.result.as_dict(),
            "wire": self.poll_item(workload),
        }

    def summary_json(self, workload: Workload) -> str:
        """`summary` as compact JSON, the wire item spliced in as text (no decode/encode).

        The usual workload (integers and strings where they belong) through one format
        string: the text `json.dumps` gives, its result's encoding kept with `/dev/state`'s."""
        w = workload
        if (
            type(w.id) is int
            and type(w.workload_id) is int
            and type(w.customer_tid) is int
            and type(w.next_action) is int
            and type(w.node_id) is str
            and type(w.queued) is bool
        ):
            esc = encode_basestring_ascii
            return (
                f'{{"id":{w.id},"gwid":{esc(w.gwid)},"type":{esc(w.type_name)},'
                f'"node_id":{esc(w.node_id)},"customer_tid":{w.customer_tid},'
                f'"next_action":{w.next_action},"queued":{"true" if w.queued else "false"},'
                f'"result":{self._result_json(w)},"wire":{self.admin_wire(w)}}}'
            )
        head = dict(self.summary(workload))
        del head["wire"]
        text = json.dumps(head, separators=(",", ":"))
        return f'{text[:-1]},"wire":{self.admin_wire(workload)}}}'

    def state(self) -> dict[str, Any]:
        """Everything a test wants to assert on, for `GET /dev/state`."""
        return {
            "counter": self.counter,
            "gateways": self.gateways,
            "uptime_posts": self.uptime_posts,
            "reserved_resources_posts": self.reserved_posts,
            "result_puts": self.result_puts,
            "deletes": self.deletes,
            "polls": self.polls,
            "results": {str(w.id): w.result.as_dict() for w in self.workloads.values()},
            "next_actions": {str(w.id): w.next_action for w in self.workloads.values()},
            "users": [u.wire() for u in self.users.values()],
        }

    def _result_json(self, workload: Workload) -> str:
        """`compact_json(result.as_dict())`, kept until the workload changes; a result of
        integers and strings (every one the explorer makes) through one format string."""
        text = self._admin_result.get(workload.id)
        if text is None:
            r = workload.result
            if (
                set(map(type, (r.category, r.state, r.epoch))) == _INT
                and set(map(type, (r.workload_id, r.data_json, r.signature, r.message, r.node_id)))
                == _STR
            ):
                esc = encode_basestring_ascii
                text = (
                    f'{{"category":{r.category},"workload_id":{esc(r.workload_id)},'
                    f'"data_json":{esc(r.data_json)},"signature":{esc(r.signature)},'
                    f'"state":{r.state},"message":{esc(r.message)},"epoch":{r.epoch},'
                    f'"node_id":{esc(r.node_id)}}}'
                )
            else:
                text = compact_json(r.as_dict())
            self._admin_result[workload.id] = text
        return text

    def _result_member(self, workload: Workload) -> str:
        return f'"{workload.id}":{self._result_json(workload)}'

    def state_json(self) -> str:
        """`state()` as compact JSON text (the same text `json.dumps` gives), without
        re-encoding what did not change: history entries and unchanged results are kept
        encoded, so polling `/dev/state` during a 5,000-workload run stays cheap."""
        history = self._histories
        results = ",".join(self._result_member(w) for w in self.workloads.values())
        next_actions = {str(w.id): w.next_action for w in self.workloads.values()}
        return "".join(
            (
                '{"counter":',
                compact_json(self.counter),
                ',"gateways":',
                compact_json(self.gateways),
                ',"uptime_posts":',
                history["uptime_posts"].text(self.uptime_posts),
                ',"reserved_resources_posts":',
                history["reserved_posts"].text(self.reserved_posts),
                ',"result_puts":',
                history["result_puts"].text(self.result_puts),
                ',"deletes":',
                history["deletes"].text(self.deletes),
                ',"polls":',
                compact_json(self.polls),
                ',"results":{',
                results,
                '},"next_actions":',
                compact_json(next_actions),
                ',"users":',
                compact_json([u.wire() for u in self.users.values()]),
                "}",
            )
        )

    def snapshot(self) -> dict[str, Any]:
        """Full state as plain JSON values (for `--state`)."""
        return {
            "format": 1,
            "counter": self.counter,
            "gateway_counter": self.gateway_counter,
            "users": [asdict(u) for u in self.users.values()],
            "workloads": [asdict(w) for w in self.workloads.values()],
            "gateways": self.gateways,
            "uptime_posts": self.uptime_posts,
            "reserved_posts": self.reserved_posts,
            "result_puts": self.result_puts,
            "deletes": self.deletes,
            "polls": self.polls,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Inverse of `snapshot` (raises KeyError/TypeError/ValueError on a bad snapshot)."""
        if data.get("format") != 1:
            raise ValueError(f"unsupported state format {data.get('format')!r}")
        self.counter = int(data["counter"])
        self.gateway_counter = int(data["gateway_counter"])
        self.users = {int(u["id"]): User(**u) for u in data["users"]}
        workloads: dict[int, Workload] = {}
        for item in data["workloads"]:
            item = dict(item)
            item["result"] = Result(**item["result"])
            workload = Workload(**item)
            workloads[workload.id] = workload
        self.workloads = workloads
        self._progress_reset()
        self._ids = []
        self._wire = {}
        self._admin_wire = {}
        self._admin_result = {}
        self.gateways = dict(data["gateways"])
        self.uptime_posts = list(data["uptime_posts"])
        self.reserved_posts = list(data["reserved_posts"])
        self.result_puts = list(data["result_puts"])
        self.deletes = list(data["deletes"])
        self.polls = dict(data["polls"])
        self.revision += 1
