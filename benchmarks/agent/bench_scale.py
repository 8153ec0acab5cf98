"""The agent at ten times the workloads (issue 17 point 3): N workloads created at once in the
development explorer → every one live in redis and acknowledged in the explorer.

Each size runs on a fresh gateway (tests/support/gateway.py: redis, coredns-tfgw, tfrouter, the
development explorer and the agent in network namespaces), sizes side by side in one run:

- created: the admin API accepted all N workloads (N/2 names, each a subdomain + a proxy);
- live in redis: every name's zone field and proxy key exist (counted cheaply, then checked
  one by one in a Lua script once the counts are reached);
- acknowledged: every workload has an ok result in the explorer (time of the last result PUT,
  asked for once everything is live: a result is only sent after its writes);
- then, untimed, that CoreDNS answers every name and the router a sample of 100 routes;
- CPU seconds per process (agent, explorer, redis, CoreDNS, router) between creation and the
  end, next to wall time; peak RSS (VmHWM) of each process;
- a timeline of the largest size, one row per second: workloads cached by the agent, results
  still in its outbox (acknowledged = cached - waiting), each process's CPU in that second
  and the whole machine's (what the wall time waited on: a process at 1.0 is saturated; all
  below 1.0 with the machine below its core count means a wait; the machine at its core
  count means the cores were busy, with other jobs too on a shared machine).

With `--profile DIR` py-spy samples the agent, its result sender (once started) and the
development explorer during the largest size (non-blocking, 200 Hz) and the top functions by
own and by inclusive samples are printed (raw stacks in DIR).

With `--baseline REV` the agent of another git revision (its agent/src, e.g. `main`) runs
each size too, the two agents taking turns going first, in columns side by side; with
`--baseline-explorer` as well, that revision's development explorer serves its runs; with
`--baseline-explorer-only` instead, the baseline runs are this agent served by REV's
development explorer (the explorers compared, the same agent in both columns).

Usage: benchmarks/agent/run.sh scale [--sizes 5000,50000] [--rounds 1] [--poll-interval 1]
       [--profile DIR] [--baseline REV [--baseline-explorer | --baseline-explorer-only]]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
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
    REPO,
    Gateway,
    Process,
)

GOAL_S = 30.0  # 50,000 live and acknowledged (issue 17)
GOAL_RSS_MB = 200.0
PROCESSES = ("agent", "explorer", "redis", "coredns", "router")
TIMEOUT_S = 900.0

# Counts first (cheap), the exact check once they are reached: every name's zone field and
# proxy key, by index (ARGV: names, zone key, name prefix, zone-relative suffix, key prefix).
COUNT_LUA = "return {redis.call('HLEN', KEYS[1]), redis.call('DBSIZE')}"
CHECK_LUA = """
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local rel = ARGV[2] .. i
  if redis.call('HEXISTS', KEYS[1], rel) == 0 then return 'zone ' .. rel end
  if redis.call('EXISTS', ARGV[3] .. rel .. ARGV[4]) == 0 then return 'proxy ' .. rel end
end
return 'ok'
"""


# The timeline's counts: workloads cached (provisioned and queued) and outbox entries waiting
# for the explorer (results not yet acknowledged, and the stats entry).
PROGRESS_LUA = (
    "return {redis.call('HLEN', 'tfgateway_reservations'), redis.call('HLEN', 'tfgateway:outbox')}"
)
TIMELINE_STEP_S = 1.0
TIMELINE_PROCESSES = ("agent", "sender", "explorer", "redis", "coredns", "router")


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine have been busy (every process, other jobs too)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Timeline(threading.Thread):
    """Once a second through a run: workloads cached by the agent, results still in its outbox
    (so acknowledged = cached - waiting), and each process's CPU seconds in that second: what
    the wall time waited on, one row per second."""

    def __init__(self, gw: Any, pids: dict[str, int], t0: float) -> None:
        super().__init__(daemon=True)
        self.gw, self.pids, self.t0 = gw, pids, t0
        self.rows: list[tuple[float, int, int, dict[str, float]]] = []
        self._stop_event = threading.Event()

    def _cpu(self) -> dict[str, float]:
        cpu = {}
        for p, pid in self.pids.items():
            with contextlib.suppress(OSError):
                cpu[p] = cpu_seconds(pid)
        with contextlib.suppress(OSError):
            cpu["sender"] = sum(cpu_seconds(c) for c in children(self.pids["agent"]))
        cpu["machine"] = machine_busy_s()
        return cpu

    def run(self) -> None:
        last = self._cpu()
        step = 1
        while not self._stop_event.wait(
            max(0.0, self.t0 + step * TIMELINE_STEP_S - time.monotonic())
        ):
            try:
                out = self.gw.redis_cli("EVAL", PROGRESS_LUA, "0").split()
                cached, waiting = int(out[0]), max(0, int(out[1]) - 1)
            except Exception:  # a sample lost under load: the row says so
                cached = waiting = -1
            now = self._cpu()
            used = {p: now.get(p, 0.0) - last.get(p, 0.0) for p in (*TIMELINE_PROCESSES, "machine")}
            self.rows.append((time.monotonic() - self.t0, cached, waiting, used))
            last = now
            step += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def render(self) -> str:
        head = f"{'t s':>6}{'cached':>8}{'waiting':>8}{'acked':>8}" + "".join(
            f"{p:>9}" for p in (*TIMELINE_PROCESSES, "machine")
        )
        lines = [
            head + f"   (CPU s per second per process; machine: all {os.cpu_count()} cores, "
            "every process, other jobs too)"
        ]
        for t, cached, waiting, used in self.rows:
            acked = cached - waiting if cached >= 0 else -1
            lines.append(
                f"{t:6.1f}{cached:8}{waiting:8}{acked:8}"
                + "".join(f"{used[p]:9.2f}" for p in (*TIMELINE_PROCESSES, "machine"))
            )
        return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Child processes of `pid` (the agent's result sender, explorer/sender.py)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


@dataclass
class Run:
    created_s: float = 0.0
    live_s: float = 0.0
    acked_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    polls: int = 0
    resolved: int = 0
    routed: int = 0
    timeline: str = ""

    @property
    def done_s(self) -> float:
        return max(self.live_s, self.acked_s)


def dns_sweep(gw: Gateway, names: list[str], window: int = 256) -> int:
    """How many of `names` CoreDNS answers with an A record (pipelined over one socket)."""
    answered = 0
    sock = gw.client.open_socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        for start in range(0, len(names), window):
            pending: set[int] = set()
            for i, name in enumerate(names[start : start + window]):
                query = dns.message.make_query(name, dns.rdatatype.A)
                query.id = i
                pending.add(i)
                sock.sendto(query.to_wire(), (GW_CLIENT_ADDR, DNS_PORT))
            deadline = time.monotonic() + 2.0
            while pending and time.monotonic() < deadline:
                if not select.select([sock], [], [], 0.05)[0]:
                    continue
                reply = dns.message.from_wire(sock.recv(4096))
                if reply.id in pending and reply.answer:
                    pending.discard(reply.id)
                    answered += 1
    return answered


class Profiler:
    """py-spy on a pid, raw (collapsed) stacks to `path`; stop() ends it and waits."""

    def __init__(self, pid: int, path: Path) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        self.path = path
        self.proc = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--nonblocking", "--rate", "200",
             "--format", "raw", "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def top_functions(path: Path, n: int = 15) -> str:
    """The top frames of py-spy's raw output: by own samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"py-spy samples: {total}", "  own %  function"]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in own.most_common(n)]
    lines += ["  incl % function"]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in inclusive.most_common(n + 10)[7:]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`func (path/to/module.py:12)` → `func (module.py)`, so lines of one function add up."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0].rstrip(")")
    return f"{name} ({module})" if module else name


class BaselineGateway(Gateway):
    """The gateway with the agent's package taken from `agent_src` (another revision's
    agent/src, ahead of the installed one on the agent's PYTHONPATH)."""

    agent_src: Path | None = None
    explorer_too = False
    """`--baseline-explorer`: that revision's development explorer (devexplorer/src) too."""
    agent_too = True
    """False with `--baseline-explorer-only`: only the explorer is that revision's."""

    def spawn(self, name: str, args: Sequence[str], ns: Any = None, env: Any = None) -> Process:
        if name == "agent" and self.agent_src is not None and self.agent_too:
            env = {**(env or {}), "PYTHONPATH": f"{self.agent_src}:{REPO}"}
        if name == "explorer" and self.agent_src is not None and self.explorer_too:
            explorer_src = self.agent_src.parents[1] / "devexplorer" / "src"
            env = {**(env or {}), "PYTHONPATH": f"{explorer_src}:{REPO}"}
        return super().spawn(name, args, ns, env)


def baseline_source(rev: str) -> Path:
    """agent/src of revision `rev` (and its devexplorer/src), extracted once into a temporary
    directory."""
    out = Path(tempfile.mkdtemp(prefix="tfgw-scale-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "agent/src", "devexplorer/src"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "agent" / "src"


def measure(size: int, args: argparse.Namespace, profile: Path | None, src: Path | None) -> Run:
    names_n = size // 2
    run = Run()
    workdir = Path(tempfile.mkdtemp(prefix="tfgw-scale-"))
    gateway = BaselineGateway(workdir, poll_interval=args.poll_interval, dns_query_log=False)
    gateway.agent_src = src
    gateway.explorer_too = args.baseline_explorer or args.baseline_explorer_only
    gateway.agent_too = not args.baseline_explorer_only
    with gateway as gw:
        user = gw.add_user()
        prefix = "s"
        names = [f"{prefix}{i}.{MANAGED_DOMAIN}" for i in range(names_n)]
        specs: list[dict[str, Any]] = []
        for name in names:
            base = {"node_id": gw.node_id, "customer_tid": user.id, "domain": name}
            specs.append({**base, "type": "subdomain", "ips": [GW_CLIENT_ADDR]})
            specs.append({**base, "type": "proxy", "addr": BACKEND_ADDR,
                          "port": BACKEND_HTTP_PORT, "port_tls": BACKEND_TLS_PORT})  # fmt: skip
        zone = MANAGED_DOMAIN + "."
        pids = {p: gw.procs[p].popen.pid for p in PROCESSES}
        hlen0, dbsize0 = (int(v) for v in gw.redis_cli("EVAL", COUNT_LUA, "1", zone).split())
        spies = []
        if profile is not None:  # the agent, and the development explorer for comparison
            spies.append(Profiler(pids["agent"], profile))
            spies.append(Profiler(pids["explorer"], profile.with_name("explorer-" + profile.name)))
        cpu0 = {p: cpu_seconds(pid) for p, pid in pids.items()}
        kids0 = {c: cpu_seconds(c) for c in children(pids["agent"])}
        t0, t0_wall = time.monotonic(), time.time()
        timeline = Timeline(gw, pids, t0)
        timeline.start()
        for start in range(0, len(specs), 1000):
            gw.call(gw.admin.create_workloads(specs[start : start + 1000]))
        run.created_s = time.monotonic() - t0
        live_at: float | None = None
        acked_at: float | None = None
        next_progress = 0.0
        sender_spied = False
        while live_at is None or acked_at is None:
            if time.monotonic() - t0 > TIMEOUT_S:
                raise TimeoutError(f"{size}: after {TIMEOUT_S:g} s live={live_at} acked={acked_at}")
            now = time.monotonic()
            if live_at is None:
                hlen, dbsize = (int(v) for v in gw.redis_cli("EVAL", COUNT_LUA, "1", zone).split())
                if hlen - hlen0 >= names_n and dbsize - dbsize0 >= names_n:
                    check = gw.redis_cli(
                        "EVAL", CHECK_LUA, "1", zone, str(names_n), prefix,
                        "/tcprouter/service/", "." + MANAGED_DOMAIN,
                    ).strip()  # fmt: skip
                    if check == "ok":
                        live_at = now - t0
            if live_at is not None and acked_at is None and now >= next_progress:
                # results follow the writes; at most once a second (the answer's time of the
                # last PUT is exact): a progress count walks every workload in the explorer
                next_progress = now + 1.0
                progress = gw.call(gw.admin.progress(gw.node_id))
                if progress["results"]["ok"] >= size:
                    acked_at = float(progress["last_result_put"]) - t0_wall
                    run.polls = int(progress["polls"])
            if profile is not None and not sender_spied and (kids := children(pids["agent"])):
                sender_spied = True  # the result sender, once the agent started it
                spies.append(Profiler(kids[0], profile.with_name("sender-" + profile.name)))
            time.sleep(0.25)
        run.live_s, run.acked_s = live_at, acked_at
        timeline.stop()
        run.timeline = timeline.render()
        run.cpu_s = {p: cpu_seconds(pid) - cpu0[p] for p, pid in pids.items()}
        run.rss_mb = {p: peak_rss_mb(pid) for p, pid in pids.items()}
        kids = children(pids["agent"])
        run.cpu_s["sender"] = sum(cpu_seconds(c) - kids0.get(c, 0.0) for c in kids)
        run.rss_mb["sender"] = sum(peak_rss_mb(c) for c in kids)
        for spy in spies:
            spy.stop()
        # Untimed: CoreDNS serves every name, the router a sample of routes.
        run.resolved = dns_sweep(gw, names)
        for name in names[:: max(1, names_n // 100)]:
            with contextlib.suppress(OSError):
                run.routed += gw.http(name).status == 200
    shutil.rmtree(workdir, ignore_errors=True)
    return run


def report(results: dict[tuple[str, int], list[Run]], args: argparse.Namespace) -> None:
    sizes = list(results)

    def med(get: Any, fmt: str = "{:.1f}") -> list[str]:
        return [fmt.format(statistics.median(get(r) for r in results[s])) for s in sizes]

    print(f"\nAgent at scale: N workloads (N/2 names, each a subdomain + a proxy) created at "
          f"once, agent --poll-interval {args.poll_interval:g}; medians of {args.rounds} round(s); "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if args.baseline_explorer_only:
        print(f"column {args.baseline[:12]}: this agent with {args.baseline}'s development "
              "explorer; column this: this agent with this explorer")  # fmt: skip
    print(f"{'metric':48}" + "".join(f"{f'{a} N={s:,}':>18}" for a, s in sizes))
    rows: list[tuple[str, list[str]]] = [
        ("created in the explorer, s", med(lambda r: r.created_s)),
        ("all live in redis, s", med(lambda r: r.live_s)),
        ("all acknowledged (last result PUT), s", med(lambda r: r.acked_s)),
        (f"live and acknowledged, s (goal ≤ {GOAL_S:g} for 50,000)", med(lambda r: r.done_s)),
        ("workloads per second",
         [f"{s[1] / statistics.median(r.done_s for r in results[s]):.0f}" for s in sizes]),
        ("result PUTs per second (N / acknowledged s)",
         [f"{s[1] / statistics.median(r.acked_s for r in results[s]):.0f}" for s in sizes]),
        ("explorer polls", med(lambda r: r.polls, "{:.0f}")),
    ]  # fmt: skip
    for p in PROCESSES:
        rows.append((f"CPU s: {p}", med(lambda r, p=p: r.cpu_s[p])))
        if p == "agent":  # its child process sending result PUTs, if it has one
            rows.append(("CPU s: agent's result sender", med(lambda r: r.cpu_s["sender"])))
    per_workload = [
        1000 * statistics.median(r.cpu_s["agent"] + r.cpu_s["sender"] for r in results[s]) / s[1]
        for s in sizes
    ]
    rows.append(("agent CPU ms per workload (with its sender)", [f"{v:.2f}" for v in per_workload]))
    for p in PROCESSES:
        goal = f" (goal ≤ {GOAL_RSS_MB:g})" if p == "agent" else ""
        rows.append((f"peak RSS MB: {p}{goal}", med(lambda r, p=p: r.rss_mb[p])))
        if p == "agent":
            rows.append(("peak RSS MB: agent's result sender", med(lambda r: r.rss_mb["sender"])))
    rows.append(("names CoreDNS answers (after)", med(lambda r: r.resolved, "{:.0f}")))
    rows.append(("sampled routes answering (after)", med(lambda r: r.routed, "{:.0f}")))
    for label, cells in rows:
        print(f"{label:48}" + "".join(f"{c:>18}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="5000,50000", help="workload counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--profile", type=Path, help="py-spy the agent at the largest size")
    parser.add_argument(
        "--baseline", metavar="REV", help="also run the agent of git revision REV, taking turns"
    )
    parser.add_argument(
        "--baseline-explorer",
        action="store_true",
        help="the baseline runs with REV's development explorer too (its CPU compared as well)",
    )
    parser.add_argument(
        "--baseline-explorer-only",
        action="store_true",
        help="the baseline runs are this agent with REV's development explorer (the explorers "
        "compared, the same agent)",
    )
    args = parser.parse_args()
    if (args.baseline_explorer or args.baseline_explorer_only) and not args.baseline:
        parser.error("--baseline-explorer and --baseline-explorer-only need --baseline REV")
    if args.baseline_explorer and args.baseline_explorer_only:
        parser.error("--baseline-explorer or --baseline-explorer-only, not both")
    sizes = [int(v) for v in args.sizes.split(",")]
    if any(s < 2 or s % 2 for s in sizes):
        parser.error("--sizes: even counts ≥ 2 (each name is a subdomain + a proxy)")
    agents: dict[str, Path | None] = {"this": None}
    if args.baseline:
        agents = {args.baseline[:12]: baseline_source(args.baseline), "this": None}
    results: dict[tuple[str, int], list[Run]] = {(a, s): [] for s in sizes for a in agents}
    for round_no in range(args.rounds):
        order = list(agents) if round_no % 2 == 0 else list(reversed(agents))
        for size in sizes:  # sizes alternate within each round, agents take turns first
            for agent in order:
                run_one(args, results, agent, agents[agent], size, round_no, max(sizes))
    report(results, args)
    for src in agents.values():
        if src is not None:
            shutil.rmtree(src.parents[1], ignore_errors=True)
    return 0


def run_one(
    args: argparse.Namespace,
    results: dict[tuple[str, int], list[Run]],
    agent: str,
    src: Path | None,
    size: int,
    round_no: int,
    largest: int,
) -> None:
    profile = None
    if args.profile is not None and size == largest:
        args.profile.mkdir(parents=True, exist_ok=True)
        profile = args.profile / f"agent-{agent}-{size}-round{round_no + 1}.txt"
    print(f"round {round_no + 1}/{args.rounds}: {agent} agent, {size:,} workloads",
          flush=True)  # fmt: skip
    run = measure(size, args, profile, src)
    results[(agent, size)].append(run)
    agent_cpu, agent_rss = run.cpu_s["agent"], run.rss_mb["agent"]
    print(f"  live {run.live_s:.1f} s, acknowledged {run.acked_s:.1f} s, agent CPU "
          f"{agent_cpu:.1f} s (+ sender {run.cpu_s['sender']:.1f} s), RSS {agent_rss:.0f} MB"
          f" (+ sender {run.rss_mb['sender']:.0f} MB)", flush=True)  # fmt: skip
    if size == largest:
        print(f"timeline ({agent}, {size:,}):\n{run.timeline}", flush=True)
    if profile is not None and profile.exists():
        print(f"agent: {top_functions(profile)}", flush=True)
    explorer_profile = profile.with_name("explorer-" + profile.name) if profile else None
    if explorer_profile is not None and explorer_profile.exists():
        print(f"development explorer: {top_functions(explorer_profile, 8)}", flush=True)
    sender_profile = profile.with_name("sender-" + profile.name) if profile else None
    if sender_profile is not None and sender_profile.exists():
        print(f"agent's result sender: {top_functions(sender_profile, 8)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
