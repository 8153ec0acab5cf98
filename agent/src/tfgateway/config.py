"""The daemon's settings, validated once at start-up (every bad value → a clear message)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tfgateway.node.location import Location
from tfgateway.primitives.name_proofs import DEFAULT_GRACE, DEFAULT_RECHECK_INTERVAL, ProofMode
from tfgateway.primitives.proof import DEFAULT_TIMEOUT as DEFAULT_PROOF_TIMEOUT
from tfgateway.telemetry.logs import LogFormat

__all__ = ["Config"]


@dataclass(frozen=True)
class Config:
    seed: str = "identity.seed"
    explorer: str = ""
    """`--explorer`; empty: standalone (no registration, polling or uptime reports)."""
    workloads: str = ""
    """`--workloads`: the operator's workloads file (docs/workloads.md); empty: none."""
    redis: str = "tcp://localhost:6379"
    redis_password: str | None = field(default=None, repr=False)
    """From `--redis-password-file`; replaces a password in the `--redis` URL (never both)."""
    debug: bool = False
    farm: int = 0
    nameservers: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    tcp_client_port: int = 18000
    endpoint: str = ""
    wg_iface: str = "wg-tfgateway"
    free: bool = False
    location: Location | None = None
    geoip_url: str = "https://geoip.grid.tf"
    allow_private_backends: bool = False
    gateway_addresses: tuple[str, ...] = ()
    terminate_tls: tuple[str, ...] = ()
    """Domains whose explorer proxies the router terminates TLS for (`--terminate-tls`)."""
    terminate_tls_redirect: bool = False
    detect_addresses: bool = True
    metrics_listen: str = ""
    poll_interval: float = 10.0
    reconcile_interval: float = 300.0
    replay_interval: float = 600.0
    uptime_interval: float = 600.0
    max_backoff: float = 30.0
    request_timeout: float = 15.0
    """Total time allowed for one explorer request (`--explorer-timeout`)."""
    log_format: LogFormat = "text"
    name_proof: ProofMode = ProofMode.REQUIRED
    """`--name-proof`: names outside the managed domains need proof of control (required), or
    the Go daemon's first come, first served (first-come)."""
    proof_resolvers: tuple[tuple[str, int], ...] = ()
    """`--proof-resolver`: (address, port) of the resolvers proofs are looked up with; empty:
    the host's /etc/resolv.conf."""
    proof_timeout: float = DEFAULT_PROOF_TIMEOUT
    proof_recheck_interval: float = DEFAULT_RECHECK_INTERVAL
    proof_grace: float = DEFAULT_GRACE
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def fourtosix_enabled(self) -> bool:
        """As upstream: on only when both --endpoint and --wg-iface are non-empty."""
        return bool(self.endpoint and self.wg_iface)
