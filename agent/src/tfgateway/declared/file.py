"""The workloads file: TOML → entries, each the same reservation an explorer workload makes.

Only the file's own structure is checked here (kinds, names, field types, unknown fields) plus
the validation explorer workloads go through before they reach redis (`validation.py`, WireGuard
keys); ownership, zones and name proofs are the provisioners' (the same code for both sources).
A bad entry becomes an `EntryError` naming the file, the entry and the field; the others are
still entries. A file that cannot be read or parsed raises `FileError`: nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tfgateway.model import gojson
from tfgateway.model.reservation import Reservation
from tfgateway.primitives.validation import (
    ValidationError,
    normalize_domain,
    validate_proxy_target,
    validate_record_ips,
)
from tfgateway.primitives.wireguard import decode_key

__all__ = [
    "KINDS",
    "OPERATOR",
    "DeclaredFile",
    "Entry",
    "EntryError",
    "FileError",
    "entry_reservation",
    "fourtosix_user",
    "load",
    "parse",
]

OPERATOR: Final = "0"
"""The owner id of every declared entry in the ownership records (explorer users are > 0)."""

KINDS: Final[dict[str, str]] = {
    "delegation": "domain_delegate",
    "subdomain": "subdomain",
    "proxy": "proxy",
    "reverse_proxy": "reverse_proxy",
    "fourtosix": "gateway4to6",
}
"""File kind → reservation type, in the order they are applied (zones before names)."""

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MAX_FILE_BYTES: Final = 16 * 1024 * 1024
MAX_SECRET_BYTES: Final = 4096
"""The router reads at most this many bytes of a tunnel handshake's secret."""
MIN_SECRET_RANDOM: Final = 16

_FIELDS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    # kind: (required, optional)
    "subdomain": (frozenset({"name", "domain", "addresses"}), frozenset()),
    "delegation": (frozenset({"name", "domain"}), frozenset()),
    "proxy": (
        frozenset({"name", "domain", "address", "port", "port_tls"}),
        frozenset({"terminate_tls", "proxy_protocol"}),
    ),
    "reverse_proxy": (
        frozenset({"name", "domain", "secret_file"}),
        frozenset({"terminate_tls", "proxy_protocol"}),
    ),
    "fourtosix": (frozenset({"name", "public_key"}), frozenset()),
}


class FileError(Exception):
    """The file as a whole cannot be used (unreadable, not TOML, wrong shape)."""


class _FieldError(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class EntryError:
    """An entry that is not served, and why."""

    path: str
    kind: str
    name: str
    """The entry's name, or `#<n>` (its position among the kind's entries) when it has none."""
    field: str
    message: str

    def __str__(self) -> str:
        where = f"field '{self.field}': " if self.field else ""
        return f'{self.path}: {self.kind} "{self.name}": {where}{self.message}'


@dataclass(frozen=True)
class Entry:
    """One good entry: `fields` as the operator wrote them (normalised), never a secret."""

    kind: str
    name: str
    fields: Mapping[str, Any]
    secret: str = field(default="", repr=False)
    """The tunnel secret read from `secret_file` (reverse proxies only)."""

    @property
    def type(self) -> str:
        return KINDS[self.kind]

    @property
    def digest(self) -> str:
        """What identifies the entry's content: its fields and (hashed) its secret."""
        doc = {"kind": self.kind, "fields": dict(self.fields)}
        if self.secret:
            doc["secret"] = hashlib.sha256(self.secret.encode()).hexdigest()
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def domain(self) -> str:
        value = self.fields.get("domain", "")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class DeclaredFile:
    path: str
    entries: list[Entry]
    errors: list[EntryError]
    warnings: list[str]


def fourtosix_user(name: str) -> str:
    """The 4to6 address owner of entry `name`: one address per entry, never an explorer user's
    (those are decimal ids)."""
    return f"{OPERATOR}:{name}"


def entry_reservation(
    kind: str, name: str, fields: Mapping[str, Any], secret: str = ""
) -> Reservation:
    """The reservation the provisioners get for an entry (the explorer path's data keys; the
    options only a file can set travel as extra keys the explorer's data never has)."""
    rtype = KINDS[kind]
    data: dict[str, Any]
    user = OPERATOR
    if kind == "subdomain":
        data = {"domain": fields["domain"], "destination": list(fields["addresses"])}
    elif kind == "delegation":
        data = {"domain": fields["domain"]}
    elif kind == "proxy":
        data = {
            "domain": fields["domain"],
            "addr": fields["address"],
            "port": fields["port"],
            "port_tls": fields["port_tls"],
        }
    elif kind == "reverse_proxy":
        data = {"domain": fields["domain"], "secret": secret}
    else:
        data = {"public_key": fields["public_key"]}
        user = fourtosix_user(name)
    if kind in ("proxy", "reverse_proxy"):
        data["terminate_tls"] = bool(fields.get("terminate_tls", False))
        data["proxy_protocol"] = int(fields.get("proxy_protocol", 0))
    return Reservation(
        id=f"file:{name}",
        user_id=user,
        type=rtype,
        data=gojson.marshal(data),
        tag={"source": "file"},
    )


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise _FieldError(key, f"must be a string, got {_toml_type(value)}")
    return value


def _port(doc: Mapping[str, Any], key: str) -> int:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _FieldError(key, f"must be a port number 1-65535, got {value!r}")
    return value


def _toml_type(value: object) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _domain(doc: Mapping[str, Any]) -> str:
    try:
        return normalize_domain(_text(doc, "domain"))
    except ValidationError as exc:
        raise _FieldError("domain", str(exc)) from None


def _options(doc: Mapping[str, Any], out: dict[str, Any]) -> None:
    terminate = doc.get("terminate_tls", False)
    if not isinstance(terminate, bool):
        raise _FieldError("terminate_tls", f"must be true or false, got {_toml_type(terminate)}")
    protocol = doc.get("proxy_protocol", 0)
    if isinstance(protocol, bool) or protocol not in (0, 1, 2):
        raise _FieldError("proxy_protocol", f"must be 0, 1 or 2, got {protocol!r}")
    out["terminate_tls"] = terminate
    out["proxy_protocol"] = protocol


def read_secret(path_text: str) -> str:
    """The tunnel secret in `path_text`: `0:` + at least 16 characters, no whitespace."""
    path = Path(path_text)
    if not path.is_absolute():
        raise _FieldError("secret_file", f"must be an absolute path, got {path_text!r}")
    try:
        raw = path.read_bytes()[: MAX_SECRET_BYTES + 2]
    except OSError as exc:
        raise _FieldError(
            "secret_file", f"cannot read {path_text}: {exc.strerror or exc}"
        ) from None
    try:
        secret = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise _FieldError("secret_file", f"{path_text} is not UTF-8 text") from None
    if len(secret.encode()) > MAX_SECRET_BYTES:
        raise _FieldError(
            "secret_file", f"the secret in {path_text} is longer than {MAX_SECRET_BYTES} bytes"
        )
    if not secret.startswith(f"{OPERATOR}:") or len(secret) < 2 + MIN_SECRET_RANDOM:
        raise _FieldError(
            "secret_file",
            f"the secret in {path_text} must be '{OPERATOR}:' followed by at least "
            f"{MIN_SECRET_RANDOM} random characters, e.g. "
            "printf '0:%s' \"$(openssl rand -hex 32)\"",
        )
    if any(c.isspace() for c in secret):
        raise _FieldError("secret_file", f"the secret in {path_text} contains whitespace")
    return secret


def _entry(kind: str, doc: Mapping[str, Any], allow_private: bool) -> tuple[dict[str, Any], str]:
    """The normalised fields of one entry (and its secret), or a `_FieldError`."""
    required, optional = _FIELDS[kind]
    for key in sorted(required):
        if key not in doc:
            raise _FieldError(key, "is missing")
    unknown = sorted(set(doc) - required - optional)
    if unknown:
        known = ", ".join(sorted(required | optional))
        raise _FieldError(unknown[0], f"unknown field for a {kind} (fields: {known})")
    out: dict[str, Any] = {}
    secret = ""
    if kind in ("subdomain", "delegation", "proxy", "reverse_proxy"):
        out["domain"] = _domain(doc)
    if kind == "subdomain":
        addresses = doc["addresses"]
        if not isinstance(addresses, list):
            raise _FieldError(
                "addresses", f"must be an array of IP addresses, got {_toml_type(addresses)}"
            )
        try:
            out["addresses"] = [str(ip) for ip in validate_record_ips(addresses)]
        except ValidationError as exc:
            raise _FieldError("addresses", str(exc).replace("destination", "address")) from None
    elif kind == "proxy":
        try:
            out["address"] = str(
                validate_proxy_target(_text(doc, "address"), allow_private=allow_private)
            )
        except ValidationError as exc:
            raise _FieldError("address", str(exc)) from None
        out["port"] = _port(doc, "port")
        out["port_tls"] = _port(doc, "port_tls")
        _options(doc, out)
    elif kind == "reverse_proxy":
        out["secret_file"] = _text(doc, "secret_file")
        _options(doc, out)
        secret = read_secret(out["secret_file"])
    elif kind == "fourtosix":
        key = _text(doc, "public_key").strip()
        try:
            decode_key(key)
        except ValueError as exc:
            raise _FieldError("public_key", f"invalid WireGuard public key: {exc}") from None
        out["public_key"] = key
    return out, secret


def parse(text: str, path: str, *, allow_private: bool = False) -> DeclaredFile:
    """Entries and per-entry errors of a workloads file's text; `FileError` if it is unusable."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FileError(f"{path}: not valid TOML: {exc}") from None
    entries: list[Entry] = []
    errors: list[EntryError] = []
    warnings: list[str] = []
    for key, value in doc.items():
        if key not in KINDS:
            raise FileError(f"{path}: unknown entry kind [[{key}]] (kinds: {', '.join(KINDS)})")
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise FileError(f"{path}: {key} must be an array of tables ([[{key}]])")
    seen: dict[str, int] = {}
    parsed: list[tuple[str, str, dict[str, Any] | EntryError, str]] = []
    for kind in KINDS:
        for index, item in enumerate(doc.get(kind, [])):
            raw_name = item.get("name")
            if not isinstance(raw_name, str) or not _NAME.fullmatch(raw_name):
                shown = raw_name if isinstance(raw_name, str) else f"#{index + 1}"
                message = (
                    "is missing"
                    if raw_name is None
                    else "must match [a-z0-9][a-z0-9-]{0,62} (lowercase letters, digits, hyphens)"
                )
                errors.append(EntryError(path, kind, shown[:80], "name", message))
                continue
            seen[raw_name] = seen.get(raw_name, 0) + 1
            try:
                fields, secret = _entry(kind, item, allow_private)
                parsed.append((kind, raw_name, fields, secret))
            except _FieldError as exc:
                parsed.append(
                    (kind, raw_name, EntryError(path, kind, raw_name, exc.field, exc.message), "")
                )
    for kind, name, outcome, secret in parsed:
        if seen[name] > 1:
            errors.append(
                EntryError(
                    path,
                    kind,
                    name,
                    "name",
                    f"{seen[name]} entries are named {name!r}; names must be unique in the file",
                )
            )
        elif isinstance(outcome, EntryError):
            errors.append(outcome)
        else:
            entries.append(Entry(kind, name, outcome, secret))
    return DeclaredFile(path, entries, errors, warnings)


def load(path: Path, *, allow_private: bool = False) -> DeclaredFile:
    """Read and parse the file at `path` (`FileError` if it cannot be read or parsed)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FileError(f"{path}: cannot read the workloads file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise FileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError(f"{path}: not UTF-8 text ({exc})") from None
    return parse(text, str(path), allow_private=allow_private)
