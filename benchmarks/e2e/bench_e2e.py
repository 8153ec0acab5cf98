"""End-to-end benchmarks of the whole gateway in network namespaces (not part of the test run).

1. latency: a workload's creation in the explorer → its name resolving, and → its route
   answering, p50/p99 over N workloads (one subdomain + one proxy each, created every 50 ms
   while a sweeper watches every pending name, so each is timed on its own).
2. bulk: 5,000 workloads (2,500 names, each a subdomain + a proxy) created at once → all
   results acknowledged, and all names live (every name resolves, a sample of routes answers).
3. memory: the agent's peak RSS (VmHWM) with those 5,000 workloads live.
4. restart: the agent restarted with those 5,000 live: the time to re-apply every cached
   workload, and the results it sends again (none: they are all acknowledged).

The data plane is the gateway's own (coredns-tfgw + tfrouter). Upstream's (the third-party
redis plugin + tcprouter's trs) cannot be built here (the Go module proxy refuses both), so the
columns compare agent settings instead: its default poll interval and faster ones, side by side
in one run. Rounds' medians are printed with the goals (5,000 workloads live ≤ 10 s, agent RSS
≤ 80 MB) and the Go daemon's figure for comparison.

Usage: benchmarks/e2e/run.sh [--rounds R] [--latency-n N] [--bulk-names M]
       [--poll-intervals default,1]
"""

from __future__ import annotations

import argparse
import os
import re
import select
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    DNS_PORT,
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    Gateway,
)
from tfgateway_devexplorer.admin_client import WorkloadInfo

BULK_GOAL_S = 10.0
RSS_GOAL_MB = 80.0
GO_DAEMON_BULK_S = 250.0  # its polling alone, for 5,000 workloads (issue 5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def poll(predicate: Callable[[], bool], timeout: float, interval: float = 0.002) -> float:
    """Monotonic time at which `predicate` first held (raises after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return time.monotonic()
        except (OSError, ValueError, dns.exception.DNSException):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(interval)


def resolves(gw: Gateway, name: str) -> bool:
    return any(rrset.rdtype == dns.rdatatype.A for rrset in gw.dns(name, "A").answer)


def dns_sweep(gw: Gateway, names: Iterable[str], window: int = 256, wait: float = 0.5) -> set[str]:
    """Ask for every name's A record over one UDP socket (pipelined); the names that answered."""
    pending = list(names)
    answered: set[str] = set()
    sock = gw.client.open_socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        while pending:
            batch, pending = pending[:window], pending[window:]
            by_id: dict[int, str] = {}
            for i, name in enumerate(batch):
                query = dns.message.make_query(name, dns.rdatatype.A)
                query.id = i
                by_id[i] = name
                sock.sendto(query.to_wire(), (GW_CLIENT_ADDR, DNS_PORT))
            deadline = time.monotonic() + wait
            while by_id and time.monotonic() < deadline:
                ready, _, _ = select.select([sock], [], [], 0.05)
                if not ready:
                    continue
                reply = dns.message.from_wire(sock.recv(4096))
                found = by_id.pop(reply.id, None)
                if found is not None and reply.answer:
                    answered.add(found)
    return answered


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (robust on a shared, loaded machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


@dataclass
class PlaneResult:
    dns_ms: list[float] = field(default_factory=list)
    route_ms: list[float] = field(default_factory=list)
    bulk_create_s: list[float] = field(default_factory=list)
    bulk_ack_s: list[float] = field(default_factory=list)
    bulk_resolved_s: list[float] = field(default_factory=list)
    bulk_live_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    restart_reapply_s: list[float] = field(default_factory=list)
    restart_ready_s: list[float] = field(default_factory=list)
    restart_puts: list[float] = field(default_factory=list)
    agent_cpu_s: list[float] = field(default_factory=list)
    explorer_cpu_s: list[float] = field(default_factory=list)


def bench_latency(gw: Gateway, n: int, round_no: int, out: PlaneResult) -> None:
    user = gw.add_user()
    created: dict[str, float] = {}  # subdomain created (→ resolves)
    proxy_created: dict[str, float] = {}  # proxy created (→ route answers)
    resolved: dict[str, float] = {}
    routed: dict[str, float] = {}

    def sweep() -> None:
        pending = [name for name in created if name not in resolved]
        now_resolved = dns_sweep(gw, pending, wait=0.2) if pending else set()
        now = time.monotonic()
        for name in now_resolved:
            resolved[name] = now
        for name in [name for name in resolved if name not in routed]:
            try:
                if gw.http(name).status == 200:
                    routed[name] = time.monotonic()
            except OSError:
                pass

    next_at = time.monotonic()
    for i in range(n):
        name = f"lat{round_no}-{i}.{MANAGED_DOMAIN}"
        while time.monotonic() < next_at:
            sweep()
        next_at += 0.05
        created[name] = time.monotonic()
        gw.create("subdomain", user, domain=name, ips=[GW_CLIENT_ADDR])
        proxy_created[name] = time.monotonic()
        gw.create("proxy", user, domain=name, addr=BACKEND_ADDR, port=BACKEND_HTTP_PORT,
                  port_tls=BACKEND_TLS_PORT)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(routed) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(resolved)} resolved and {len(routed)} routed of {n}")
        sweep()
    out.dns_ms += [(resolved[name] - t0) * 1000 for name, t0 in created.items()]
    out.route_ms += [(routed[name] - t0) * 1000 for name, t0 in proxy_created.items()]


def bench_bulk(gw: Gateway, names_n: int, out: PlaneResult) -> None:
    user = gw.add_user()
    names = [f"bulk{i}.{MANAGED_DOMAIN}" for i in range(names_n)]
    specs: list[dict[str, Any]] = []
    for name in names:
        base = {"node_id": gw.node_id, "customer_tid": user.id, "domain": name}
        specs.append({**base, "type": "subdomain", "ips": [GW_CLIENT_ADDR]})
        specs.append({**base, "type": "proxy", "addr": BACKEND_ADDR, "port": BACKEND_HTTP_PORT,
                      "port_tls": BACKEND_TLS_PORT})  # fmt: skip
    agent_pid = gw.procs["agent"].popen.pid
    explorer_pid = gw.procs["explorer"].popen.pid
    cpu0, explorer_cpu0 = cpu_seconds(agent_pid), cpu_seconds(explorer_pid)
    t0, t0_wall = time.monotonic(), time.time()
    infos: list[WorkloadInfo] = []
    for start in range(0, len(specs), 500):
        infos += gw.call(gw.admin.create_workloads(specs[start : start + 500]))
    gwids = {info.gwid for info in infos}
    newest = [info.id for info in infos[-10:]]

    def all_acknowledged() -> float | None:
        """Wall time of the last result PUT, once every workload has an ok result. A cheap
        look at the newest workloads first: the full state is large, and fetching it often
        would slow the explorer down and skew the measurement."""
        if not all(gw.call(gw.admin.get_workload(wid)).answered for wid in newest):
            return None
        state = gw.call(gw.admin.state())
        if any(state["results"].get(str(info.id), {}).get("state") != 1 for info in infos):
            return None
        puts = [
            p for p in state["result_puts"] if p.get("gwid") in gwids and p.get("status") == 201
        ]
        return max(float(p["time"]) for p in puts)

    # Watch everything go live while it happens, cheaply enough that the observer's own CPU use
    # stays small next to the gateway's: names go live roughly in creation order, so each sweep
    # asks only for the first `window` names not yet resolved; a sample of routes is checked as
    # soon as its name resolves; acknowledgements are looked at every quarter of a second.
    created = time.monotonic() - t0
    pending = list(names)
    sample = set(names[:: max(1, len(names) // 100)])
    unrouted = [n for n in names if n in sample]
    t_resolved = t_routed = None
    acked_at: float | None = None
    next_ack_check = 0.0
    while pending or unrouted or acked_at is None:
        if time.monotonic() - t0 > 600:
            raise TimeoutError(f"after 600 s: {len(pending)} names unresolved, acked={acked_at}")
        if pending:
            answered = dns_sweep(gw, pending[:256], wait=0.05)
            pending = [n for n in pending if n not in answered]
            if not pending:
                t_resolved = time.monotonic()
        resolved_so_far = set(names) - set(pending) if pending else set(names)
        for name in [n for n in unrouted if n in resolved_so_far][:5]:
            try:
                if gw.http(name).status == 200:
                    unrouted.remove(name)
            except OSError:
                pass
        if not unrouted and t_routed is None:
            t_routed = time.monotonic()
        if acked_at is None and time.monotonic() >= next_ack_check:
            next_ack_check = time.monotonic() + 0.25
            acked_at = all_acknowledged()
        if not pending and unrouted:
            time.sleep(0.01)
    ack_s = acked_at - t0_wall
    out.bulk_create_s.append(created)
    out.bulk_ack_s.append(ack_s)
    out.bulk_resolved_s.append((t_resolved or t0) - t0)
    out.bulk_live_s.append(max(ack_s, (t_resolved or t0) - t0, (t_routed or t0) - t0))
    out.rss_mb.append(peak_rss_mb(agent_pid))
    out.agent_cpu_s.append(cpu_seconds(agent_pid) - cpu0)
    out.explorer_cpu_s.append(cpu_seconds(explorer_pid) - explorer_cpu0)
    bench_restart(gw, gwids, out)


RECONCILED = re.compile(rb"reconcile: (\d+) live reservations re-applied in ([0-9.]+)s")


def bench_restart(gw: Gateway, gwids: set[str], out: PlaneResult) -> None:
    """Restart the agent with everything live: how long it takes to re-apply every cached
    workload (its own log line), and how many results it sends again (none should be)."""
    state = gw.call(gw.admin.state())
    puts_before, polls_before = len(state["result_puts"]), state["polls"][gw.node_id]["count"]
    log_path = gw.procs["agent"].log
    offset = log_path.stat().st_size
    t0 = time.monotonic()
    gw.restart_agent()

    def reconciled() -> bool:
        with log_path.open("rb") as f:
            f.seek(offset)
            found = RECONCILED.search(f.read())
        if found is None or int(found.group(1)) < len(gwids):
            return False
        out.restart_reapply_s.append(float(found.group(2)))
        return True

    poll(reconciled, timeout=120, interval=0.05)
    out.restart_ready_s.append(time.monotonic() - t0)

    def polled_through() -> bool:  # from 0: acknowledged workloads no longer qualify
        polls = gw.call(gw.admin.state())["polls"][gw.node_id]["count"]
        return bool(polls - polls_before >= 2)

    poll(polled_through, timeout=120, interval=0.2)
    out.restart_puts.append(len(gw.call(gw.admin.state())["result_puts"]) - puts_before)


def run_setting(poll_interval: float | None, args: argparse.Namespace) -> PlaneResult:
    out = PlaneResult()
    label = setting_label(poll_interval)
    for round_no in range(args.rounds):
        workdir = Path(tempfile.mkdtemp(prefix="tfgw-bench-"))
        with Gateway(workdir, poll_interval=poll_interval, dns_query_log=False) as gw:
            print(f"[{label}] round {round_no + 1}/{args.rounds}: latency", flush=True)
            bench_latency(gw, args.latency_n, round_no, out)
            print(f"[{label}] round {round_no + 1}/{args.rounds}: bulk", flush=True)
            bench_bulk(gw, args.bulk_names, out)
    return out


def setting_label(poll_interval: float | None) -> str:
    return "poll default" if poll_interval is None else f"poll {poll_interval:g}s"


def report(results: dict[str, PlaneResult], args: argparse.Namespace) -> None:
    def med(values: list[float]) -> str:
        return f"{statistics.median(values):8.1f}" if values else "       -"

    def pct(values: list[float], q: float) -> str:
        return f"{percentile(values, q):8.1f}" if values else "       -"

    planes = list(results)
    print(f"\nEnd-to-end, coredns-tfgw + tfrouter + agent ({args.rounds} rounds; "
          f"{os.cpu_count()} cores; columns: the agent's --poll-interval)")  # fmt: skip
    print(f"{'metric':52}" + "".join(f"{p:>14}" for p in planes))
    rows = [
        (f"create → resolves, p50 ms (n={args.latency_n}/round)",
         [pct(results[p].dns_ms, 50) for p in planes]),
        ("create → resolves, p99 ms", [pct(results[p].dns_ms, 99) for p in planes]),
        ("create → route answers, p50 ms", [pct(results[p].route_ms, 50) for p in planes]),
        ("create → route answers, p99 ms", [pct(results[p].route_ms, 99) for p in planes]),
        (f"{2 * args.bulk_names} workloads → created in the explorer, s",
         [med(results[p].bulk_create_s) for p in planes]),
        (f"{2 * args.bulk_names} workloads → all names resolve, s",
         [med(results[p].bulk_resolved_s) for p in planes]),
        (f"{2 * args.bulk_names} workloads → all acknowledged, s (median)",
         [med(results[p].bulk_ack_s) for p in planes]),
        (f"{2 * args.bulk_names} workloads → all live, s (goal ≤ {BULK_GOAL_S:g})",
         [med(results[p].bulk_live_s) for p in planes]),
        (f"agent CPU time for the {2 * args.bulk_names}, s",
         [med(results[p].agent_cpu_s) for p in planes]),
        ("dev explorer CPU time meanwhile, s (not the gateway)",
         [med(results[p].explorer_cpu_s) for p in planes]),
        (f"agent peak RSS, MB (goal ≤ {RSS_GOAL_MB:g})", [med(results[p].rss_mb) for p in planes]),
        ("agent restart: all live re-applied, s (its log)",
         [med(results[p].restart_reapply_s) for p in planes]),
        ("agent restart → all re-applied, s (with start-up)",
         [med(results[p].restart_ready_s) for p in planes]),
        ("agent restart: results sent again (should be 0)",
         [med(results[p].restart_puts) for p in planes]),
    ]  # fmt: skip
    for label, cells in rows:
        print(f"{label:52}" + "".join(f"{c:>14}" for c in cells))
    for p in planes:
        if results[p].bulk_live_s and 2 * args.bulk_names == 5000:
            ratio = GO_DAEMON_BULK_S / statistics.median(results[p].bulk_live_s)
            print(f"[{p}] vs the Go daemon's > {GO_DAEMON_BULK_S:g} s polling alone: "
                  f"≥ {ratio:.0f}x faster")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-n", type=int, default=100)
    parser.add_argument("--bulk-names", type=int, default=2500, help="names (2 workloads each)")
    parser.add_argument(
        "--poll-intervals",
        default="default,1",
        help="comma-separated agent --poll-interval values, one column each ('default' = none)",
    )
    args = parser.parse_args()
    settings = [None if v == "default" else float(v) for v in args.poll_intervals.split(",")]
    results = {setting_label(v): run_setting(v, args) for v in settings}
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
