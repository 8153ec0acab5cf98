"""The Go daemon's `provision.Reservation` and `provision.Result`, byte-compatible.

Cache values in `tfgateway_reservations` are `"1.0.0"` + Go `json.Encoder` output of a
Reservation (explorer spec §10); a gateway switched from the Go daemon must load its entries, and
entries we write must be what the Go daemon would have written. Result signatures follow §7.
Times keep nanoseconds (`GoTime`) because Go writes them and a decode/encode round trip must not
change the bytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import Any, Protocol

from tfgateway.model import gojson

__all__ = [
    "CACHE_VERSION",
    "MAX_DURATION_NS",
    "ZERO_TIME",
    "CacheDecodeError",
    "GoTime",
    "Reservation",
    "Result",
    "ResultState",
    "decode_cache_value",
    "encode_cache_value",
    "format_go_time",
    "parse_go_time",
    "result_signing_bytes",
    "sign_result",
]

MAX_DURATION_NS = 2**63 - 1
"""Duration of every explorer workload: Go's max int64 nanoseconds (≈292 years)."""

CACHE_VERSION = b'"1.0.0"'
_CACHE_MAX_VERSION = (1, 0, 0)


class GoTime(datetime):
    """A `datetime` that also carries nanoseconds, like Go's `time.Time`.

    Behaves as a plain aware datetime (µs precision) everywhere; only Go formatting looks at
    `nanosecond`. Derived datetimes (arithmetic, `replace`) keep the microsecond part only.
    """

    __slots__ = ("_ns",)  # no __dict__ per time: the agent holds one per live workload or two
    _ns: int

    def __new__(
        cls,
        year: int,
        month: int,
        day: int,
        hour: int = 0,
        minute: int = 0,
        second: int = 0,
        microsecond: int = 0,
        tzinfo: Any = None,
        *,
        fold: int = 0,
        nanosecond: int | None = None,
    ) -> GoTime:
        if nanosecond is not None:
            if not 0 <= nanosecond < 1_000_000_000:
                raise ValueError("nanosecond must be in 0..999999999")
            microsecond = nanosecond // 1000
        self = super().__new__(
            cls, year, month, day, hour, minute, second, microsecond, tzinfo, fold=fold
        )
        self._ns = nanosecond if nanosecond is not None else microsecond * 1000
        return self

    @property
    def nanosecond(self) -> int:
        """Nanoseconds within the second (0..999999999)."""
        ns: int | None = getattr(self, "_ns", None)  # unset on results of datetime arithmetic
        if ns is None or ns // 1000 != self.microsecond:
            return self.microsecond * 1000
        return ns

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """Pickle/copy support (datetime's own reduce would bypass the nanoseconds)."""
        return (
            _restore_gotime,
            (*self.timetuple()[:6], self.tzinfo, self.nanosecond),
        )

    @classmethod
    def from_unix(cls, seconds: int, nanoseconds: int = 0) -> GoTime:
        """UTC time of a Unix timestamp (the explorer's `epoch`)."""
        if cls is GoTime:  # times are immutable: the workloads of a burst share a few epochs
            return _from_unix(seconds, nanoseconds)
        return cls._make_from_unix(seconds, nanoseconds)

    @classmethod
    def _make_from_unix(cls, seconds: int, nanoseconds: int) -> GoTime:
        base = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
        return cls(
            base.year,
            base.month,
            base.day,
            base.hour,
            base.minute,
            base.second,
            tzinfo=UTC,
            nanosecond=nanoseconds,
        )

    @classmethod
    def now_utc(cls) -> GoTime:
        n = datetime.now(UTC)
        return cls(n.year, n.month, n.day, n.hour, n.minute, n.second, n.microsecond, UTC)


@functools.lru_cache(maxsize=1024)
def _from_unix(seconds: int, nanoseconds: int) -> GoTime:
    return GoTime._make_from_unix(seconds, nanoseconds)


def _restore_gotime(
    year: int, month: int, day: int, hour: int, minute: int, second: int, tz: Any, ns: int
) -> GoTime:
    return GoTime(year, month, day, hour, minute, second, tzinfo=tz, nanosecond=ns)


ZERO_TIME = GoTime(1, 1, 1, tzinfo=UTC)
"""Go's zero `time.Time` (`0001-01-01T00:00:00Z`)."""


def format_go_time(t: datetime) -> str:
    """Go `time.RFC3339Nano` as `time.Time.MarshalJSON` writes it (naive means UTC)."""
    tz = t.tzinfo
    if tz is None:
        t = t.replace(tzinfo=UTC)
    ns = t.nanosecond if isinstance(t, GoTime) else t.microsecond * 1000
    # `isoformat` (C) writes the date and time as Go does up to the seconds: 4-digit year
    # (zero-padded below 1000), 2-digit fields; the f-string it replaces cost 2.5x as much.
    text = t.isoformat(timespec="seconds")[:19]
    if ns:
        text += "." + f"{ns:09d}".rstrip("0")
    if tz is UTC or tz is None:
        return text + "Z"
    offset = t.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    if minutes == 0:
        return text + "Z"
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_go_time(text: str) -> GoTime:
    """Parse RFC 3339 with up to nanosecond precision (Go `time.Time.UnmarshalJSON`)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    ns = int((frac + "000000000")[:9]) if frac else 0
    if m.group(8):
        tz: timezone = UTC
    else:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError(f"time zone offset out of range in {text!r}")
        delta = timedelta(hours=oh, minutes=om)
        tz = UTC if not delta else timezone(-delta if m.group(9) == "-" else delta)
    try:
        return GoTime(year, month, day, hour, minute, second, tzinfo=tz, nanosecond=ns)
    except ValueError as exc:
        raise ValueError(f"invalid time {text!r}: {exc}") from exc


class ResultState(IntEnum):
    """ZOS `provision.ResultState`."""

    ERROR = 0
    OK = 1
    DELETED = 2


@dataclass(frozen=True, slots=True)
class Result:
    """ZOS `provision.Result`: the gateway's answer to one reservation.

    `data_json` holds raw JSON bytes (what the provisioner returned, compact); empty means
    `null`. `signature` is the lower-case hex ed25519 signature (see `sign_result`).
    """

    type: str = ""
    id: str = ""
    created: datetime = ZERO_TIME
    state: int = ResultState.ERROR
    message: str = ""
    data_json: bytes = b""
    signature: str = ""

    def to_go(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "created": format_go_time(self.created),
            "state": int(self.state),
            "message": self.message,
            "data_json": gojson.RawJSON(self.data_json),
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class Reservation:
    """ZOS `provision.Reservation` as the gateway uses it (explorer spec §5, §10).

    `data` is the raw JSON of the per-type struct (empty: omitted), `signature` the customer
    signature bytes (empty: omitted), `tag` is never serialized.
    """

    id: str
    user_id: str
    type: str
    node_id: str = ""
    data: bytes = b""
    created: datetime = ZERO_TIME
    duration: int = MAX_DURATION_NS
    signature: bytes = b""
    to_delete: bool = False
    reference: str = ""
    result: Result = field(default_factory=Result)
    version: int = 0
    tag: dict[str, str] = field(default_factory=dict, compare=False)

    def expires_at(self) -> datetime | None:
        """Created + Duration (aware), or None when beyond what `datetime` can hold."""
        created = self.created if self.created.tzinfo else self.created.replace(tzinfo=UTC)
        try:
            return created + timedelta(microseconds=self.duration // 1000)
        except OverflowError:
            return None

    def expired(self, now: datetime | None = None) -> bool:
        """Go `Reservation.Expired()`: now is after Created + Duration."""
        end = self.expires_at()
        if end is None:
            return False
        now = now or datetime.now(UTC)
        return (now if now.tzinfo else now.replace(tzinfo=UTC)) > end

    def with_result(self, result: Result) -> Reservation:
        """This reservation with `result` (`dataclasses.replace` looks the fields up again
        on every call; this is a fifth of its cost)."""
        return Reservation(
            self.id,
            self.user_id,
            self.type,
            self.node_id,
            self.data,
            self.created,
            self.duration,
            self.signature,
            self.to_delete,
            self.reference,
            result,
            self.version,
            self.tag,
        )

    def to_go(self) -> dict[str, Any]:
        """The Go struct's fields in Go order, ready for `gojson.marshal`."""
        out: dict[str, Any] = {
            "id": self.id,
            "node_id": self.node_id,
            "user_id": self.user_id,
            "type": self.type,
        }
        if self.data:
            out["data"] = gojson.RawJSON(self.data)
        out["created"] = format_go_time(self.created)
        out["duration"] = self.duration
        if self.signature:
            out["signature"] = self.signature
        out["to_delete"] = self.to_delete
        out["reference"] = self.reference
        out["result"] = self.result.to_go()
        out["version"] = self.version
        return out


def result_signing_bytes(result: Result) -> bytes:
    """What the result signature covers: one state byte ‖ message ‖ raw data JSON (§7).

    Empty `data_json` counts as `null`, which is what the Go engine signs when a provisioner
    returns no data (`json.Marshal(nil)`).
    """
    state = int(result.state)
    if not 0 <= state <= 255:
        raise ValueError(f"result state {state} does not fit in one byte")
    return bytes([state]) + result.message.encode("utf-8") + (result.data_json or b"null")


class Signer(Protocol):
    """What signs a result: the gateway's identity (`node.identity.Identity`)."""

    def sign(self, message: bytes) -> bytes: ...


def sign_result(result: Result, identity: Signer) -> Result:
    """The result with `signature` set to the hex ed25519 signature by the gateway identity."""
    signature = identity.sign(result_signing_bytes(result)).hex()
    # The constructor, not `dataclasses.replace` (which looks the fields up again each call).
    return Result(
        result.type,
        result.id,
        result.created,
        result.state,
        result.message,
        result.data_json,
        signature,
    )


# ----- cache value codec -----


class CacheDecodeError(ValueError):
    """A cache value that is not a reservation this agent (or the Go daemon) wrote."""


def encode_cache_value(r: Reservation) -> bytes:
    """`"1.0.0"` + Go `json.Encoder` output of the reservation (with its newline): the bytes
    `gojson.encode(r.to_go())` gives (a property test holds them equal), written field by
    field without the intermediate dictionaries (one per workload, the hottest encoding)."""
    string, raw = gojson.string, gojson.raw_text
    res = r.result
    parts = [
        '"1.0.0"{"id":',
        string(r.id),
        ',"node_id":',
        string(r.node_id),
        ',"user_id":',
        string(r.user_id),
        ',"type":',
        string(r.type),
    ]
    if r.data:
        parts += (',"data":', raw(r.data))
    parts += (',"created":"', format_go_time(r.created), '","duration":', int.__repr__(r.duration))
    if r.signature:
        parts += (',"signature":"', base64.b64encode(r.signature).decode("ascii"), '"')
    parts += (
        ',"to_delete":',
        "true" if r.to_delete else "false",
        ',"reference":',
        string(r.reference),
        ',"result":{"type":',
        string(res.type),
        ',"id":',
        string(res.id),
        ',"created":"',
        format_go_time(res.created),
        '","state":',
        int.__repr__(int(res.state)),
        ',"message":',
        string(res.message),
        ',"data_json":',
        raw(res.data_json),
        ',"signature":',
        string(res.signature),
        '},"version":',
        int.__repr__(r.version),
        "}\n",
    )
    return "".join(parts).encode("utf-8", "surrogateescape")


def _fields(obj: Any, what: str) -> dict[str, Any]:
    """Object members by lower-case key (Go matches JSON keys case-insensitively)."""
    if not isinstance(obj, dict):
        raise CacheDecodeError(f"{what} is not a JSON object")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        lower = key.lower()
        if lower not in out or key == lower:
            out[lower] = value
    return out


def _str(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or isinstance(value, gojson.Number):
        raise CacheDecodeError(f"field {key!r} must be a string")
    return value


def _int(fields: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = fields.get(key)
    if value is None:
        return 0
    if not isinstance(value, gojson.Number):
        raise CacheDecodeError(f"field {key!r} must be a number")
    try:
        number = int(value)
    except ValueError as exc:
        raise CacheDecodeError(f"field {key!r} must be an integer, got {value}") from exc
    if not lo <= number <= hi:
        raise CacheDecodeError(f"field {key!r} out of range: {number}")
    return number


def _time(fields: dict[str, Any], key: str) -> datetime:
    value = fields.get(key)
    if value is None:
        return ZERO_TIME
    if not isinstance(value, str) or isinstance(value, gojson.Number):
        raise CacheDecodeError(f"field {key!r} must be a time string")
    try:
        return parse_go_time(value)
    except ValueError as exc:
        raise CacheDecodeError(f"field {key!r}: {exc}") from exc


def _raw(fields: dict[str, Any], key: str) -> bytes:
    if key not in fields:
        return b""
    value = fields[key]
    if value is None:
        return b"null"
    return gojson.marshal(value)


def _decode_result(obj: Any) -> Result:
    if obj is None:
        return Result()
    f = _fields(obj, "result")
    data = _raw(f, "data_json")
    return Result(
        type=_str(f, "type"),
        id=_str(f, "id"),
        created=_time(f, "created"),
        state=_int(f, "state", -(2**63), 2**63 - 1),
        message=_str(f, "message"),
        data_json=b"" if data == b"null" else data,  # both mean null, in JSON and signatures
        signature=_str(f, "signature"),
    )


def decode_cache_value(value: bytes) -> Reservation:
    """Decode a cache value written by this agent or by the Go daemon (versions ≤ 1.0.0)."""
    version, payload = gojson.split_versioned(value)
    if version is not None and version[:3] > _CACHE_MAX_VERSION:
        text = ".".join(map(str, version[:3]))
        raise CacheDecodeError(f"unsupported cache value version {text} (newest known: 1.0.0)")
    try:
        doc = gojson.loads_preserving_numbers(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheDecodeError(f"cache value is not valid JSON: {exc}") from exc
    f = _fields(doc, "cache value")
    signature_text = _str(f, "signature")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CacheDecodeError("field 'signature' is not valid base64") from exc
    to_delete = f.get("to_delete")
    if to_delete is not None and not isinstance(to_delete, bool):
        raise CacheDecodeError("field 'to_delete' must be a boolean")
    data = _raw(f, "data")
    return Reservation(
        id=_str(f, "id"),
        node_id=_str(f, "node_id"),
        user_id=_str(f, "user_id"),
        type=_str(f, "type"),
        data=data,
        created=_time(f, "created"),
        duration=_int(f, "duration", -(2**63), 2**63 - 1),
        signature=signature,
        to_delete=bool(to_delete),
        reference=_str(f, "reference"),
        result=_decode_result(f.get("result")),
        version=_int(f, "version", -(2**63), 2**63 - 1),
        tag={"source": "tfgateway_cache"},
    )
