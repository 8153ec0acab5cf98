"""The agent's CPU per workload in its own process, without the rest of the gateway.

`bench_scale.py` runs the whole gateway, so its CPU figures follow the machine's load (other
processes' cache misses, more loop turns per page). This one times, with `process_time` in a
process of its own per agent, the two parts of a job that the main process pays per workload:

- **job** (no redis): a poll item to its job (`job_from_item`), the signed result, the cache
  value, the result PUT body, the outbox entry and its stats, the `job` log line (to
  /dev/null);
- **primitives** (a real redis-server on a Unix socket): a subdomain and a proxy per name,
  100 jobs at a time through one auto-pipeline (the primitives' transactions, as in a page).

Each agent (`--baseline REV`'s `agent/src`, and this checkout's) runs in turn, `--rounds`
times, the order alternating; medians are printed side by side with the ratio.

    benchmarks/agent/run.sh cpu [--baseline main] [--rounds 3] [--workloads 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
ZONE = "gw.example.com"


def poll_item(i: int) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload_id": 1, "node_id": NODE, "pool_id": 5, "reference": "", "description": "",
        "id": i, "customer_tid": 77, "customer_signature": "ab" * 64, "next_action": 3,
        "epoch": 1764000000, "metadata": "", "version": 1,
        "result": {"category": 0, "workload_id": "", "data_json": None, "signature": "",
                   "state": 0, "message": "", "epoch": 0, "node_id": ""},
    }  # fmt: skip
    if i % 2:
        return {**base, "workload_type": 7, "domain": f"n{i}.{ZONE}", "ips": ["185.69.166.1"]}
    return {**base, "workload_type": 5, "domain": f"n{i}.{ZONE}", "addr": "8.8.8.8",
            "port": 80, "port_tls": 443}  # fmt: skip


def job_cpu(n: int) -> float:
    """µs of CPU per workload for the job's work outside redis (best of 3)."""
    import dataclasses
    import logging

    from tfgateway.engine.outbox import Message
    from tfgateway.explorer.workloads import job_from_item, wire_result
    from tfgateway.model.reservation import (
        GoTime,
        Result,
        ResultState,
        encode_cache_value,
        sign_result,
    )
    from tfgateway.node.identity import Identity
    from tfgateway.telemetry.logs import Fields, setup_logging

    setup_logging()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(Path(os.devnull).open("w"))  # noqa: SIM115 (for the process's life)
    log = logging.getLogger("tfgateway.engine.engine")
    identity = Identity(b"helloworldhelloworldhelloworld12")
    items = [poll_item(i) for i in range(n)]
    stats = {"proxy": 5, "reverse_proxy": 0, "subdomain": 7, "delegate_domain": 0}

    def one(item: dict[str, Any]) -> None:
        job = job_from_item(item)
        r = job.reservation
        result = sign_result(
            Result(type=r.type, id=job.real_id, created=GoTime.now_utc(), state=ResultState.OK),
            identity,
        )
        with_result = getattr(r, "with_result", None)  # the engine's copy, where it has one
        stored = with_result(result) if with_result else dataclasses.replace(r, result=result)
        encode_cache_value(stored)
        body = wire_result(result, job.category)
        Message(seq=0, op="result", gwid=job.real_id, body=body, queued=time.time()).to_json()
        json.dumps(stats)
        log.info(Fields("job", id=job.real_id, type=r.type, action="provision", outcome="ok",
                        duration_ms=1.3))  # fmt: skip

    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for item in items:
            one(item)
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


async def primitives_cpu(n: int, socket_path: str) -> tuple[float, float]:
    """µs of CPU per workload for the primitives on a real redis, and commands per workload."""
    import redis.asyncio

    from tfgateway.model import gojson
    from tfgateway.model.reservation import Reservation
    from tfgateway.primitives.dns import DNSStore, SubdomainProvisioner
    from tfgateway.primitives.name_proofs import NameProofs
    from tfgateway.primitives.proxy import ProxyProvisioner
    from tfgateway.store.batch import AutoPipeline

    client = redis.asyncio.Redis(unix_socket_path=socket_path)
    await client.flushall()
    await client.script_flush()
    batch = AutoPipeline(client)
    proofs = NameProofs.first_come(batch)
    store = DNSStore(batch, NODE, [f"ns1.{ZONE}"], proofs=proofs)
    await store.setup_managed_domains([ZONE])
    subdomains = SubdomainProvisioner(store)
    proxies = ProxyProvisioner(batch, NODE, proofs=proofs)

    def reservation(i: int, kind: str) -> Reservation:
        domain = f"n{i}.{ZONE}"
        doc: dict[str, Any] = (
            {"domain": domain, "destination": ["185.69.166.1"]}
            if kind == "subdomain"
            else {"domain": domain, "addr": "8.8.8.8", "port": 80, "port_tls": 443}
        )
        return Reservation(id=f"{i}-{kind}", user_id=str(i + 1), type=kind, node_id=NODE,
                           data=gojson.marshal(doc))  # fmt: skip

    commands = batch.commands
    started = time.process_time()
    for start in range(0, n, 100):
        names = range(start, start + 100)
        await asyncio.gather(*(subdomains.provision(reservation(i, "subdomain")) for i in names))
        await asyncio.gather(*(proxies.provision(reservation(i, "proxy")) for i in names))
    cpu = time.process_time() - started
    await client.aclose()
    return cpu / (2 * n) * 1e6, (batch.commands - commands) / (2 * n)


def child(args: argparse.Namespace) -> None:
    job = job_cpu(args.workloads)
    primitives, commands = asyncio.run(primitives_cpu(args.workloads, args.socket))
    print(json.dumps({"job": job, "primitives": primitives, "commands": commands}))


def baseline_source(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "agent/src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "agent" / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", type=int, default=4000, help="names (x2 workloads)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    from tests.support.processes import binary, stop, wait_until

    with tempfile.TemporaryDirectory(prefix="tfgw-cpu-") as tmp:
        socket_path = f"{tmp}/redis.sock"
        server = subprocess.Popen(
            [binary("redis-server"), "--port", "0", "--unixsocket", socket_path,
             "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: Path(socket_path).exists(), what="redis socket")
            sources = {args.baseline: baseline_source(args.baseline, Path(tmp)),
                       "this": REPO / "agent" / "src"}  # fmt: skip
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
            for round_no in range(args.rounds):
                order = list(sources) if round_no % 2 == 0 else list(reversed(sources))
                for name in order:
                    env = {**os.environ, "PYTHONPATH": f"{sources[name]}:{REPO}"}
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "--socket", socket_path,
                         "--workloads", str(args.workloads)],
                        env=env, capture_output=True, check=True, text=True, timeout=900,
                    ).stdout  # fmt: skip
                    runs[name].append(json.loads(out.strip().splitlines()[-1]))
                    print(f"round {round_no + 1}: {name}: {runs[name][-1]}", flush=True)
        finally:
            stop(server)
    base, this = (runs[name] for name in sources)
    load = os.getloadavg()[0]
    print(f"\nCPU per workload in the agent's process, medians of {args.rounds} rounds "
          f"({2 * args.workloads:,} workloads each; load average {load:.1f})")  # fmt: skip
    print(f"{'part':<44}{args.baseline:>10}{'this':>10}{'this/base':>11}")
    for key, label in (("job", "job: item → signed result, cache, PUT, log (µs)"),
                       ("primitives", "primitives on redis: subdomain / proxy (µs)"),
                       ("commands", "redis commands per workload (primitives)")):  # fmt: skip
        b = statistics.median(r[key] for r in base)
        t = statistics.median(r[key] for r in this)
        print(f"{label:<44}{b:>10.1f}{t:>10.1f}{t / b:>10.2f}x")
    total_b = statistics.median(r["job"] + r["primitives"] for r in base)
    total_t = statistics.median(r["job"] + r["primitives"] for r in this)
    print(f"{'both (µs)':<44}{total_b:>10.1f}{total_t:>10.1f}{total_t / total_b:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
