"""What the agent applied from the workloads file, kept in redis so a restart (or
`tfgateway status`) knows it: hash `tfgateway:declared` (entry name → JSON record) and key
`tfgateway:declared:file` (the file's last reload: path, time, error). Never a secret."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis

from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.store.batch import AutoPipeline, as_batch

__all__ = ["FILE_KEY", "RECORDS_KEY", "FileState", "Record", "read_all", "read_file_state"]

RECORDS_KEY: Final = "tfgateway:declared"
FILE_KEY: Final = "tfgateway:declared:file"

OK: Final = "ok"
ERROR: Final = "error"
PENDING: Final = "pending"


@dataclass(frozen=True)
class Record:
    """One entry's state. `applied`: its data is in the data plane now (to remove when the
    entry goes); `data` is the reservation data without a secret."""

    kind: str
    type: str
    user: str
    digest: str
    state: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    applied: bool = False
    result: dict[str, Any] | None = None
    """The provisioner's result data (4to6: the client's address and the gateway's peer)."""
    client: dict[str, Any] = field(default_factory=dict)
    """What a client needs that the result lacks (reverse proxies: tunnel remote, secret file)."""
    updated: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Record | None:
        try:
            doc = json.loads(raw)
            return cls(**doc) if isinstance(doc, dict) else None
        except (ValueError, TypeError):
            return None

    def reservation(self, name: str) -> Reservation:
        """The reservation to decommission what this record applied (no secret needed)."""
        return Reservation(
            id=f"file:{name}",
            user_id=self.user,
            type=self.type,
            data=gojson.marshal(self.data),
            tag={"source": "file"},
        )


@dataclass(frozen=True)
class FileState:
    path: str
    loaded: float
    """When the file was last applied (unix seconds); 0: never."""
    error: str
    """Why the last read of the file changed nothing ("" when it was applied)."""
    checked: float

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


async def read_all(client: aioredis.Redis | AutoPipeline) -> dict[str, Record]:
    """Every record by entry name (undecodable ones are skipped: applied again or dropped)."""
    raw = await as_batch(client).execute("HGETALL", RECORDS_KEY)
    out: dict[str, Record] = {}
    items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    for key, value in items:
        name = key.decode() if isinstance(key, bytes) else str(key)
        record = Record.decode(value)
        if record is not None:
            out[name] = record
    return out


async def read_file_state(client: aioredis.Redis | AutoPipeline) -> FileState | None:
    raw = await as_batch(client).execute("GET", FILE_KEY)
    if raw is None:
        return None
    try:
        return FileState(**json.loads(raw))
    except (ValueError, TypeError):
        return None
