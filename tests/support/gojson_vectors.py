"""Test vectors of Go's `encoding/json`, written by real Go toolchains (tests/vectors/gojson/).

`scripts/gen-gojson-vectors.sh` runs `tests/vectors/gojson/gen.go` with each Go and writes
`go<version>.json` (the version inside is `runtime.Version()` of the Go that ran it):

- `go1.15.15.json`: Debian bullseye's Go 1.15.15, the oldest Go this project can run. The Go
  daemon's and the explorer's release binaries were built with Go 1.14, which no reachable
  registry serves; `OLD_GO` is what the Python encoders are held to.
- `go1.21.13.json`: Go 1.21.13 (the Go module proxy's toolchain), the last Go before 1.22
  changed `\\b`/`\\f`; the same bytes as Go 1.15.15 (tests/unit/test_gojson_vectors.py).
- `go1.26.*.json`: the machine's Go; it differs from the old ones only where a string holds
  U+0008 or U+000C (pinned by the same test file).

Each case is a value in a small typed description (see gen.go) and what `json.Marshal` or
`json.Encoder.Encode` gave for it (`out`, bytes) or its error. `to_python` rebuilds the value
for a Python encoder: strings from their bytes with `surrogateescape` (an invalid byte becomes
a lone surrogate, which the encoders write as `\\ufffd` as Go does per invalid byte), Go maps
as dicts sorted by key bytes (Go sorts map keys; the encoders keep dict order), structs as
dicts in field order.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "gojson"
OLD_GO = "go1.15.15"
OLD_GO_PROXY = "go1.21.13"


@dataclass(frozen=True)
class Case:
    name: str
    api: str  # "marshal" (json.Marshal) or "encode" (json.NewEncoder(w).Encode)
    value: Any  # the typed description of gen.go
    out: bytes | None  # what Go wrote, None when it returned an error
    error: str | None


@dataclass(frozen=True)
class VectorFile:
    path: Path
    go_version: str
    cases: tuple[Case, ...]

    def content(self) -> list[tuple[str, str, Any, bytes | None, str | None]]:
        """Everything but the Go version, to compare the files of two Go releases."""
        return [(c.name, c.api, c.value, c.out, c.error) for c in self.cases]


def _case(item: dict[str, Any]) -> Case:
    out: bytes | None = None
    if "out" in item:
        out = item["out"].encode("utf-8")
    elif "out_hex" in item:
        out = bytes.fromhex(item["out_hex"])
    return Case(item["name"], item["api"], item["value"], out, item.get("error"))


@cache
def load(version: str) -> VectorFile:
    """The vectors Go `version` (e.g. "go1.15.15") wrote."""
    path = VECTORS / f"{version}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc["go_version"] != version:
        raise AssertionError(f"{path} says it was written by {doc['go_version']}")
    return VectorFile(path, version, tuple(_case(item) for item in doc["cases"]))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def newest() -> VectorFile:
    """The file of the newest Go committed (the machine's Go when it was regenerated)."""
    versions = [p.stem for p in VECTORS.glob("go*.json")]
    return load(max(versions, key=_version_key))


def old() -> VectorFile:
    """The vectors both Python encoders must pass: the old Go of the Go daemon's era."""
    return load(OLD_GO)


def to_python(
    desc: Any, *, raw: Callable[[bytes | None], Any], number: Callable[[str], Any]
) -> Any:
    """The Python value for a description; `raw` and `number` make the encoder's own types
    for a `json.RawMessage` (None: a nil one) and a `json.Number`."""

    def build(d: Any) -> Any:
        kind = d[0]
        if kind == "null":
            return None
        if kind == "bool":
            return bool(d[1])
        if kind == "int":
            return int(d[1])
        if kind == "float":
            return struct.unpack(">d", int(d[1], 16).to_bytes(8, "big"))[0]
        if kind == "str":
            return _text(d[1])
        if kind == "bytes":
            return None if d[1] is None else bytes.fromhex(d[1])
        if kind == "raw":
            return raw(None if d[1] is None else bytes.fromhex(d[1]))
        if kind == "number":
            return number(d[1])
        if kind == "array":
            return None if d[1] is None else [build(item) for item in d[1]]
        if kind == "object":
            return {name: build(item) for name, item in d[1]}
        if kind == "map":
            if d[1] is None:
                return None
            members = sorted(d[1], key=lambda m: bytes.fromhex(m[0]))
            return {_text(key): build(item) for key, item in members}
        raise ValueError(f"unknown value description {d!r}")

    return build(desc)


def _text(hex_bytes: str) -> str:
    return bytes.fromhex(hex_bytes).decode("utf-8", "surrogateescape")
