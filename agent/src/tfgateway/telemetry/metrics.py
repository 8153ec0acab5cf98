"""Opt-in Prometheus metrics (`--metrics-listen`): workloads by type and state, provision
latency, explorer errors and outbox depth. A private registry, so tests can run many agents."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "parse_listen"]

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all addresses) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics listen address {text!r} must be host:port, e.g. 127.0.0.1:9100")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.workloads = Gauge(
            "tfgateway_workloads",
            "Workloads by reservation type, state (live; for the workloads file also error and "
            "pending) and source (explorer, file)",
            ["type", "state", "source"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "tfgateway_jobs",
            "Provisioning jobs by reservation type, outcome and source (explorer, file)",
            ["type", "outcome", "source"],
            registry=self.registry,
        )
        self.provision_seconds = Histogram(
            "tfgateway_provision_seconds",
            "Time to provision or decommission one workload",
            ["type", "action", "source"],
            registry=self.registry,
        )
        self.explorer_errors = Counter(
            "tfgateway_explorer_errors",
            "Failed explorer calls by call",
            ["call"],
            registry=self.registry,
        )
        self.name_proofs = Gauge(
            "tfgateway_name_proofs",
            "Names outside the managed domains by proof state (proven, grandfathered, "
            "suspended = not served until the proof is back)",
            ["state"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "tfgateway_outbox_depth",
            "Results, deletes and stats waiting for the explorer",
            registry=self.registry,
        )
        # Labelled children, looked up once: `labels()` costs more than the update itself, and
        # the engine updates these for every job.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def job_done(
        self, rtype: str, action: str, outcome: str, seconds: float, source: str = "explorer"
    ) -> None:
        """Count one job (`tfgateway_jobs`) and time it (`tfgateway_provision_seconds`)."""
        self._child(self.jobs, rtype, outcome, source).inc()
        self._child(self.provision_seconds, rtype, action, source).observe(seconds)

    def job_malformed(self, rtype: str) -> None:
        self._child(self.jobs, rtype, "malformed", "explorer").inc()

    def explorer_error(self, call: str) -> None:
        self.explorer_errors.labels(call=call).inc()

    def set_live(self, counts: dict[str, int]) -> None:
        """Live explorer workloads by type."""
        for rtype, n in counts.items():
            self._child(self.workloads, rtype, "live", "explorer").set(n)

    def set_declared(self, counts: dict[tuple[str, str], int]) -> None:
        """Entries of the workloads file by (type, state: ok, error, pending); ok is live."""
        for (rtype, state), n in counts.items():
            shown = "live" if state == "ok" else state
            self._child(self.workloads, rtype, shown, "file").set(n)

    def set_name_proofs(self, counts: dict[str, int]) -> None:
        for state, n in counts.items():
            self._child(self.name_proofs, state).set(n)

    def track_outbox(self, depth: Callable[[], int]) -> None:
        self.outbox_depth.set_function(lambda: float(depth()))

    def serve(self, listen: str) -> None:
        host, port = parse_listen(listen)
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)
