"""Opt-in Prometheus metrics (`--metrics-listen`): workloads by type and state, provision
latency, explorer errors and outbox depth. A private registry, so tests can run many agents."""

from __future__ import annotations

import logging
from collections.abc import Callable

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
            "Workloads this gateway serves (state=live) by reservation type",
            ["type", "state"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "tfgateway_jobs",
            "Engine jobs by reservation type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.provision_seconds = Histogram(
            "tfgateway_provision_seconds",
            "Time to provision or decommission one workload",
            ["type", "action"],
            registry=self.registry,
        )
        self.explorer_errors = Counter(
            "tfgateway_explorer_errors",
            "Failed explorer calls by call",
            ["call"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "tfgateway_outbox_depth",
            "Results, deletes and stats waiting for the explorer",
            registry=self.registry,
        )

    def explorer_error(self, call: str) -> None:
        self.explorer_errors.labels(call=call).inc()

    def set_live(self, counts: dict[str, int]) -> None:
        for rtype, n in counts.items():
            self.workloads.labels(type=rtype, state="live").set(n)

    def track_outbox(self, depth: Callable[[], int]) -> None:
        self.outbox_depth.set_function(lambda: float(depth()))

    def serve(self, listen: str) -> None:
        host, port = parse_listen(listen)
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)
