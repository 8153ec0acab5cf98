"""Input models of the development explorer's admin API and of `--load` files.

These describe what a test or an operator asks for (a user, a workload); the store turns them
into explorer objects. Hostile tests need to send things the real explorer would never produce,
so the workload spec deliberately accepts any JSON value for the type-specific fields and offers
`overrides`, `remove` and `raw` escape hatches.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# workload_type enum of the explorer (spec §4.1); names accepted by the admin API.
WORKLOAD_TYPES: dict[str, int] = {
    "zdb": 0,
    "container": 1,
    "volume": 2,
    "network": 3,
    "kubernetes": 4,
    "proxy": 5,
    "reverse_proxy": 6,
    "subdomain": 7,
    "domain_delegate": 8,
    "gateway4to6": 9,
    "network_resource": 10,
    "public_ip": 11,
}
TYPE_ALIASES: dict[str, str] = {
    "delegate": "domain_delegate",
    "domain-delegate": "domain_delegate",
    "reverse-proxy": "reverse_proxy",
    "4to6": "gateway4to6",
}
TYPE_NAMES: dict[int, str] = {number: name for name, number in WORKLOAD_TYPES.items()}

# Type-specific keys, in Go struct order (spec §4.3), with the Go zero value of each.
TYPE_FIELDS: dict[int, tuple[tuple[str, Any], ...]] = {
    5: (("domain", ""), ("addr", ""), ("port", 0), ("port_tls", 0)),
    6: (("domain", ""), ("secret", "")),
    7: (("domain", ""), ("ips", [])),
    8: (("domain", ""),),
    9: (("public_key", ""),),
}

# next_action enum (spec §4.1)
NEXT_CREATE, NEXT_SIGN, NEXT_PAY, NEXT_DEPLOY, NEXT_DELETE, NEXT_INVALID, NEXT_DELETED = range(7)
NEXT_MIGRATED = 7
# result state enum
STATE_ERROR, STATE_OK, STATE_DELETED = 0, 1, 2

INT64_MAX = 2**63 - 1


def workload_type_number(value: str | int) -> int:
    """Resolve a workload type given by name (`subdomain`, `4to6`, ...) or number (0..255)."""
    if isinstance(value, bool):
        raise ValueError("workload type must be a name or a number, not a boolean")
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise ValueError(f"workload type number {value} is outside 0..255 (uint8)")
        return value
    name = value.strip().lower()
    name = TYPE_ALIASES.get(name, name)
    if name in WORKLOAD_TYPES:
        return WORKLOAD_TYPES[name]
    if name.isdigit():
        return workload_type_number(int(name))
    known = ", ".join(sorted(WORKLOAD_TYPES))
    raise ValueError(f"unknown workload type {value!r} (known: {known}, or a number)")


class UserSpec(BaseModel):
    """A phonebook user (spec §3.7). `id` is taken from the global counter when omitted."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(default=None, ge=1, le=INT64_MAX)
    name: str | None = None
    email: str = ""
    pubkey: str = Field(description="hex of the user's ed25519 public key")
    host: str = ""
    description: str = ""

    @field_validator("pubkey")
    @classmethod
    def _pubkey_is_hex(cls, value: str) -> str:
        # The real phonebook stores whatever was registered; the gateway hex-decodes it without
        # a length check. Tests of hostile keys may want odd values, so only require a string.
        return value


class WorkloadSpec(BaseModel):
    """A workload to publish for a gateway (spec §4), by type name or number."""

    model_config = ConfigDict(extra="forbid")

    type: str | int
    node_id: str
    customer_tid: int = Field(default=0, ge=-(2**63), le=INT64_MAX)
    id: int | None = Field(default=None, ge=1, le=INT64_MAX)
    workload_id: int = Field(default=1, ge=-(2**63), le=INT64_MAX)
    pool_id: int = 0
    reference: str = ""
    description: str = ""
    json_text: str = Field(default="", alias="json")
    customer_signature: str = ""
    next_action: int = Field(default=NEXT_DEPLOY, ge=0, le=255)
    epoch: int | None = None
    metadata: str = ""
    version: int = 2
    # type-specific fields: any JSON value so hostile tests can send wrong types
    domain: Any = None
    addr: Any = None
    port: Any = None
    port_tls: Any = None
    secret: Any = None
    ips: Any = None
    public_key: Any = None
    # escape hatches for hostile input
    overrides: dict[str, Any] | None = Field(
        default=None, description="keys replaced in place (or appended) in the workload JSON"
    )
    remove: list[str] | None = Field(default=None, description="keys dropped from the JSON")
    raw: str | None = Field(default=None, description="poll item served verbatim instead")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | int) -> str | int:
        workload_type_number(value)
        return value

    @property
    def type_number(self) -> int:
        return workload_type_number(self.type)

    def type_fields(self, type_number: int | None = None) -> dict[str, Any]:
        """The type-specific keys in Go order, with given values or Go zero values
        (`type_number`: this spec's, when the caller has it already)."""
        number = self.type_number if type_number is None else type_number
        fields: dict[str, Any] = {}
        for key, zero in TYPE_FIELDS.get(number, ()):
            value = getattr(self, key)
            fields[key] = zero if value is None else value
        return fields


class SeedFile(BaseModel):
    """Content of a `--load` file."""

    model_config = ConfigDict(extra="forbid")

    users: list[UserSpec] = []
    workloads: list[WorkloadSpec] = []


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One readable part per problem: `workloads.3.type: unknown workload type 'x' …`."""
    parts = []
    for item in error.errors():
        where = prefix + ".".join(str(part) for part in item["loc"]) or "(root)"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
