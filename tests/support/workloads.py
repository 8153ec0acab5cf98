"""Seeded random mixes of the four data-plane workload types (admin API specs) for the burst and
kill -9 tests, what redis shows of each, and the counters the explorer should end up with."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

import redis

from tfgateway_devexplorer.user_crypto import encrypt_secret, reverse_proxy_plaintext

__all__ = [
    "COUNTER_OF",
    "MANAGED",
    "expected_counts",
    "in_redis",
    "mixed_workloads",
    "reported_counts",
]

MANAGED = "gw.example.com"
PROXY_TARGET = "185.69.166.9"
# reservation type -> its counter in the explorer's WorkloadAmount (reserved_resources)
COUNTER_OF = {
    "proxy": "proxy",
    "reverse_proxy": "reverse_proxy",
    "subdomain": "subdomain",
    "domain_delegate": "delegate_domain",
}


def mixed_workloads(node: str, n: int, rng: random.Random, *, users: int) -> list[dict[str, Any]]:
    """`n` workloads of random types for `users` users (ids 100 and up), each on a name of its
    own (`s3.gw.example.com`, `d4.example.org`, ...)."""
    specs: list[dict[str, Any]] = []
    for i in range(n):
        tid = 100 + rng.randrange(users)
        kind = rng.choice(["subdomain", "domain_delegate", "proxy", "reverse_proxy"])
        spec: dict[str, Any] = {"type": kind, "node_id": node, "customer_tid": tid}
        if kind == "subdomain":
            spec.update(domain=f"s{i}.{MANAGED}", ips=[f"185.69.{i // 250}.{i % 250 + 1}"])
        elif kind == "domain_delegate":
            spec.update(domain=f"d{i}.example.org")
        elif kind == "proxy":
            spec.update(domain=f"p{i}.{MANAGED}", addr=PROXY_TARGET, port=80, port_tls=443)
        else:
            secret = encrypt_secret(reverse_proxy_plaintext(tid, f"x{i}"), node, version=0)
            spec.update(domain=f"r{i}.{MANAGED}", secret=secret, version=0)
        specs.append(spec)
    return specs


def in_redis(r: redis.Redis, spec: dict[str, Any]) -> Literal["live", "gone", "other"]:
    """What the data plane's redis holds for a `mixed_workloads` spec: "live" (its entry, with
    its owner and data), "gone" (no entry for its name) or "other" (someone else's entry)."""
    kind, domain, tid = spec["type"], spec["domain"], str(spec["customer_tid"])
    if kind == "subdomain":
        owner = r.hget("managed_domains", domain)
        return "gone" if owner is None else "live" if owner == tid.encode() else "other"
    if kind == "domain_delegate":
        raw = r.hget("zone", domain)
        if raw is None:
            return "gone"
        return "live" if json.loads(raw)["Owner"] == tid else "other"
    raw = r.get(f"/tcprouter/service/{domain}")
    if raw is None:
        return "gone"
    inner = json.loads(base64.b64decode(json.loads(raw)["Value"]))
    if kind == "proxy":
        return "live" if inner["addr"] == PROXY_TARGET else "other"
    return "live" if inner["clientsecret"].startswith(f"{tid}:") else "other"


def expected_counts(specs: Iterable[dict[str, Any]]) -> dict[str, int]:
    """The reserved_resources counters of these workloads being live."""
    kinds = Counter(spec["type"] for spec in specs)
    return {key: kinds[kind] for kind, key in COUNTER_OF.items()}


def reported_counts(state: dict[str, Any]) -> dict[str, int | None]:
    """The counters of the last reserved_resources report in the explorer's `/dev/state` (all
    None before the first)."""
    posts = state["reserved_resources_posts"]
    last = posts[-1] if posts else {}
    return {key: last.get(key) for key in COUNTER_OF.values()}
