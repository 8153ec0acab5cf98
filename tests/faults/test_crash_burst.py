"""kill -9 of the agent at seeded random points, 22 times, during a burst of 500 mixed workloads
with deletes arriving in between (issue 8 point 3).

At the end: every workload live exactly once (redis matches what the explorer says should be
live), every result acknowledged and never contradicted, every delete done, the last
reserved_resources report right, the outbox empty. The agent is the real program, against a real
redis-server and the development explorer as a separate process.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.agent_process import AgentProcess
from tests.support.devexplorer import DevExplorerProcess
from tests.support.http import SyncHTTP
from tests.support.processes import wait_until
from tests.support.world_dns import WorldDNS
from tfgateway.engine.cache import RESERVATIONS_KEY
from tfgateway.engine.outbox import OUTBOX_KEY
from tfgateway.node.identity import load_or_create
from tfgateway_devexplorer.user_crypto import encrypt_secret, reverse_proxy_plaintext

pytestmark = pytest.mark.integration

MANAGED = "gw.example.com"
WORKLOADS = 500
KILLS = 22
SEED = 20261125


@pytest.fixture
def explorer(tmp_path: Path) -> Iterator[DevExplorerProcess]:
    proc = DevExplorerProcess(log_file=tmp_path / "explorer.log")
    proc.start()
    yield proc
    proc.stop()


class Admin:
    """Synchronous admin calls (the kill loop is synchronous)."""

    def __init__(self, root: str) -> None:
        self.http = SyncHTTP(root, timeout=30)

    def post(self, path: str, body: Any) -> Any:
        r = self.http.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def state(self) -> dict[str, Any]:
        r = self.http.get("/dev/state")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


def specs(node: str, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(WORKLOADS):
        tid = 100 + rng.randrange(7)
        kind = rng.choice(["subdomain", "domain_delegate", "proxy", "reverse_proxy"])
        spec: dict[str, Any] = {"type": kind, "node_id": node, "customer_tid": tid}
        if kind == "subdomain":
            spec.update(domain=f"s{i}.{MANAGED}", ips=[f"185.69.{i // 250}.{i % 250 + 1}"])
        elif kind == "domain_delegate":
            spec.update(domain=f"d{i}.example.org")
        elif kind == "proxy":
            spec.update(domain=f"p{i}.{MANAGED}", addr="185.69.166.9", port=80, port_tls=443)
        else:
            secret = encrypt_secret(reverse_proxy_plaintext(tid, f"x{i}"), node, version=0)
            spec.update(domain=f"r{i}.{MANAGED}", secret=secret, version=0)
        out.append(spec)
    return out


def live_in_redis(r: redis.Redis, spec: dict[str, Any]) -> bool:
    kind, domain, tid = spec["type"], spec["domain"], str(spec["customer_tid"])
    if kind == "subdomain":
        return r.hget("managed_domains", domain) == tid.encode()
    if kind == "domain_delegate":
        raw = r.hget("zone", domain)
        return raw is not None and json.loads(raw)["Owner"] == tid
    raw = r.get(f"/tcprouter/service/{domain}")
    if raw is None:
        return False
    inner = json.loads(base64.b64decode(json.loads(raw)["Value"]))
    if kind == "proxy":
        return bool(inner["addr"] == "185.69.166.9")
    return bool(inner["clientsecret"].startswith(f"{tid}:"))


def test_kill_9_twenty_times_during_a_burst_of_500(
    tmp_path: Path,
    explorer: DevExplorerProcess,
    redis_url: str,
    redis_db: redis.Redis,
    world_dns: WorldDNS,
) -> None:
    rng = random.Random(SEED)
    agent = AgentProcess(
        seed=tmp_path / "identity.seed",
        explorer_url=explorer.url,
        redis_url=redis_url,
        log_file=tmp_path / "agent.log",
        poll_interval=0.05,
        proof_resolver=world_dns.resolver,
    )
    node = load_or_create(agent.seed).node_id
    admin = Admin(explorer.admin_url)
    all_specs = specs(node, rng)
    world_dns.publish_proofs(  # the delegated domains' owners prove control
        {s["domain"]: s["customer_tid"] for s in all_specs if s["type"] == "domain_delegate"}
    )
    # The burst arrives in 22 parts and deletes in three waves, while the agent keeps dying.
    chunks = [all_specs[i::KILLS] for i in range(KILLS)]
    all_specs = [spec for chunk in chunks for spec in chunk]
    ids: list[int] = []
    gwids: dict[int, str] = {}
    doomed: list[int] = []
    busy_kills = 0

    def progress() -> tuple[int, int]:
        """(answers and deletes done, still to do)."""
        state = admin.state()
        results, nas = state["results"], state["next_actions"]
        done = sum(1 for i in ids if results[str(i)]["workload_id"])
        done += sum(1 for i in doomed if nas[str(i)] == 6)
        return done, len(ids) + len(doomed) - done

    # Results and deletes take 0.15 s each to be acknowledged: the agent answers a part of
    # 23 workloads in a few tens of milliseconds, so without it most kill points would fall
    # after the part was done; with it, answers come in waves and a kill finds work left.
    r = admin.http.put("/dev/faults", json={"endpoints": ["result", "delete"], "latency": 0.15})
    assert r.status_code == 200, r.text
    try:
        for k in range(KILLS):
            agent.start()
            for v in admin.post("/dev/workloads", chunks[k]):
                ids.append(int(v["id"]))
                gwids[int(v["id"])] = str(v["gwid"])
            if k in (5, 10, 16):
                wave = rng.sample([i for i in ids if i not in doomed], 50)
                for wid in wave:
                    admin.post(f"/dev/workloads/{wid}/delete", {})
                doomed += wave
            # A random point in the work: after 0 to 15 more answers or deletes.
            start_done, _ = progress()
            target = start_done + rng.randrange(0, 16)
            wait_until(lambda target=target: progress()[0] >= target, timeout=30,  # type: ignore[misc]
                       interval=0.01, what="kill point")  # fmt: skip
            assert agent.alive(), agent.log()[-3000:]
            agent.kill9()
            busy_kills += progress()[1] > 0
        # The kills really fell during the burst, not after it.
        assert busy_kills >= KILLS - 2, busy_kills
        assert admin.http.put("/dev/faults", json={}).status_code == 200
        agent.start()
        deleted = set(doomed)

        def converged() -> bool:
            assert agent.alive(), agent.log()[-3000:]
            state = admin.state()
            nas, results = state["next_actions"], state["results"]
            return (
                all(
                    nas[str(i)] == 6 if i in deleted else results[str(i)]["state"] == 1 for i in ids
                )
                and redis_db.hlen(OUTBOX_KEY) == 0
            )

        wait_until(converged, timeout=90, interval=0.2, what="every result and delete")
        state = admin.state()
        # Results: one answer per workload (identical copies after a crash are allowed: the
        # agent cannot know whether a PUT it made just before dying arrived), never an error.
        by_gwid: dict[str, set[tuple[int, str]]] = {}
        for put in state["result_puts"]:
            if put["status"] == 201:
                res = put["result"]
                by_gwid.setdefault(put["gwid"], set()).add((res["state"], res["signature"]))
        errors = {g: s for g, s in by_gwid.items() if any(st != 1 for st, _ in s)}
        assert not errors, f"error or contradicting results: {list(errors.items())[:5]}"
        assert all(len(s) == 1 for s in by_gwid.values())
        live = [i for i in ids if i not in deleted]
        assert {gwids[i] for i in live} <= set(by_gwid)
        deletes = {d["gwid"] for d in state["deletes"] if d["status"] == 200}
        assert {gwids[i] for i in deleted} <= deletes
        # redis: exactly the live workloads, each once, with its owner's data
        assert redis_db.hlen(RESERVATIONS_KEY) == len(live)
        for spec, wid in zip(all_specs, ids, strict=True):
            assert live_in_redis(redis_db, spec) == (wid not in deleted), (wid, spec)
        kinds = Counter(spec["type"] for spec, wid in zip(all_specs, ids, strict=True)
                        if wid not in deleted)  # fmt: skip

        def counters_right() -> bool:
            posts = admin.state()["reserved_resources_posts"]
            last = posts[-1] if posts else {}
            return [
                last.get(k) for k in ("proxy", "reverse_proxy", "subdomain", "delegate_domain")
            ] == [
                kinds["proxy"],
                kinds["reverse_proxy"],
                kinds["subdomain"],
                kinds["domain_delegate"],
            ]

        wait_until(counters_right, timeout=30, interval=0.2, what="reserved_resources counters")
        print(f"\nkill -9 x{KILLS}, {busy_kills} with work outstanding")
    finally:
        agent.stop()
