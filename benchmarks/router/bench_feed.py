"""Route feed benchmark: what tfrouter spends keeping its table equal to redis during bulk writes.

The agent writes a proxy service as `SET /tcprouter/service/<domain>` + `PUBLISH tfgateway:proxy
<domain>` (one transaction), so every change reaches tfrouter twice: as a keyspace
notification and on the agent's channel. The feed used to answer each event with its own GET
(≈ 2 round trips and 2 table copies per change); it now drains the queued events, reads the
distinct hosts in pipelined MGETs and applies them to the table at once.

Columns, side by side in one run: `before` is tfrouter built from an older revision of this
repository (`--before-rev`, default the last commit with the one-GET-per-event feed) or a
binary given with `--before-binary`; `after` is the current build ($TFGW_BIN/tfrouter).
Figures: tfrouter CPU seconds from the first write until the table holds every route, the
feed's redis reads (GET + MGET calls from INFO commandstats), and how long an isolated change
takes to show up in the table afterwards (p50 over `--isolated` changes, polled through the
metrics endpoint).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.processes import binary, free_port, port_open, stop, wait_until
from tests.support.redis_server import RedisServer

HOST = "127.0.0.1"
KEY_PREFIX = "/tcprouter/service/"
CHANNEL = "tfgateway:proxy"
ROOT = Path(__file__).resolve().parents[2]
# The last revision whose feed did one GET per event (before the batched feed).
BEFORE_REV = "31ed06dd623e16b3a2610d4c63acca3eb8aade2d"
# The value tfgateway writes for a proxy to 10.1.0.1 (80/443), with the domain filled in.
INNER = b'{"addr":"10.1.0.1","clientsecret":"","tlsport":443,"httpport":80,"user":"7"}'


def service_value(domain: str) -> bytes:
    enc = base64.b64encode(INNER).decode()
    return f'{{"Key":"{KEY_PREFIX}{domain}","Value":"{enc}"}}'.encode()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_before(
    rev: str, out: Path, module: str = "dataplane/router", pkg: str = "./cmd/tfrouter"
) -> str:
    """A program (tfrouter by default) of an older revision, built from `git archive` (the Go
    build cache makes this quick, and the module cache already holds its dependencies)."""
    src = out / f"src-{module.replace('/', '-')}"
    src.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, module],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    exe = out / f"{Path(module).name if pkg == '.' else Path(pkg).name}-before"
    subprocess.run(
        ["go", "build", "-trimpath", "-o", str(exe), pkg],
        cwd=src / module,
        env={**os.environ, "CGO_ENABLED": "0"},
        check=True,
    )
    return str(exe)


class Router:
    """One tfrouter process fed by `redis_port`, observed through its metrics endpoint."""

    def __init__(self, exe: str, redis_port: int, workdir: Path) -> None:
        self.metrics = free_port()
        cfg = workdir / "router.toml"
        cfg.write_text(
            f'[server]\naddr = "{HOST}"\nport = {free_port()}\nhttpport = {free_port()}\n'
            f"clientsport = {free_port()}\n"
            f'[server.dbbackend]\ntype = "redis"\naddr = "{HOST}"\nport = {redis_port}\n'
            "refresh = 3600\n"
        )
        with (workdir / "tfrouter.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [exe, "--config", str(cfg), "-metrics", f"{HOST}:{self.metrics}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: port_open(HOST, self.metrics), timeout=10, what="tfrouter metrics")
        wait_until(lambda: self.metric('tfrouter_resyncs_total{result="ok"}') >= 1, what="resync")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    def routes(self) -> int:
        return int(self.metric("tfrouter_routes"))

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)


def reads(r: redis.Redis) -> int:
    """GET + MGET calls redis served since the last CONFIG RESETSTAT."""
    stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "mget"))


def write_bursts(r: redis.Redis, names: list[str], burst: int, gap: float) -> None:
    """As the agent sends them: `burst` pipelined SET+PUBLISH pairs every `gap` seconds."""
    next_at = time.monotonic()
    for start in range(0, len(names), burst):
        pipe = r.pipeline(transaction=False)
        for name in names[start : start + burst]:
            pipe.set(KEY_PREFIX + name, service_value(name))
            pipe.publish(CHANNEL, name)
        pipe.execute()
        next_at += gap
        time.sleep(max(0.0, next_at - time.monotonic()))


def write_one_by_one(r: redis.Redis, names: list[str], spacing: float) -> None:
    """One SET+PUBLISH transaction at a time, `spacing` seconds apart."""
    next_at = time.monotonic()
    for name in names:
        pipe = r.pipeline(transaction=True)
        pipe.set(KEY_PREFIX + name, service_value(name))
        pipe.publish(CHANNEL, name)
        pipe.execute()
        next_at += spacing
        time.sleep(max(0.0, next_at - time.monotonic()))


@dataclass
class Figures:
    cpu: list[float] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)
    isolated_ms: list[float] = field(default_factory=list)


def grown(router: Router, count: int) -> Callable[[], bool]:
    return lambda: router.routes() > count


def isolated_latencies(router: Router, r: redis.Redis, n: int, prefix: str) -> list[float]:
    """ms from an isolated SET+PUBLISH to the route being counted in the table."""
    out: list[float] = []
    for i in range(n):
        before = router.routes()
        name = f"{prefix}-iso{i}.example"
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=True)
        pipe.set(KEY_PREFIX + name, service_value(name))
        pipe.publish(CHANNEL, name)
        pipe.execute()
        wait_until(grown(router, before), timeout=10, interval=0, what=name)
        out.append((time.perf_counter() - t0) * 1000)
    return out


@contextmanager
def fresh_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def one_round(
    exe: str,
    write: Callable[[redis.Redis, list[str]], None],
    args: argparse.Namespace,
    fig: Figures,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-feed-"))
    names = [f"bulk{i}.example" for i in range(args.changes)]
    with fresh_redis(workdir / "redis") as server:
        r = server.client()
        router = Router(exe, server.port, workdir)
        try:
            r.config_resetstat()
            cpu0 = router.cpu()
            write(r, names)
            wait_until(
                lambda: router.routes() == len(names), timeout=120, interval=0.1, what="all routes"
            )
            fig.cpu.append(router.cpu() - cpu0)
            fig.reads.append(reads(r))
            fig.isolated_ms += isolated_latencies(router, r, args.isolated, "x")
        finally:
            stop(router.proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--changes", type=int, default=2500)
    ap.add_argument("--burst", type=int, default=150, help="changes per agent burst")
    ap.add_argument("--gap-ms", type=float, default=50, help="time between agent bursts")
    ap.add_argument("--spacing-ms", type=float, default=2, help="time between single changes")
    ap.add_argument("--isolated", type=int, default=20, help="isolated changes timed per round")
    ap.add_argument("--before-rev", default=BEFORE_REV, help="git revision of the 'before' build")
    ap.add_argument("--before-binary", help="use this tfrouter as 'before' instead of building")
    args = ap.parse_args()

    after = binary("tfrouter")
    before = args.before_binary or build_before(
        args.before_rev, Path(tempfile.mkdtemp(prefix="bench-feed-build-"))
    )
    scenarios: dict[str, Callable[[redis.Redis, list[str]], None]] = {
        f"bursts of {args.burst} every {args.gap_ms:g} ms": lambda r, n: write_bursts(
            r, n, args.burst, args.gap_ms / 1000
        ),
        f"one at a time, {args.spacing_ms:g} ms apart": lambda r, n: write_one_by_one(
            r, n, args.spacing_ms / 1000
        ),
    }
    results: dict[tuple[str, str], Figures] = {}
    for _ in range(args.rounds):
        for scenario, write in scenarios.items():
            for label, exe in (("before", before), ("after", after)):
                fig = results.setdefault((scenario, label), Figures())
                one_round(exe, write, args, fig)

    print(
        f"\ntfrouter route feed: {args.changes} proxy services written (SET + PUBLISH each), "
        f"median of {args.rounds} rounds; before = {args.before_binary or args.before_rev[:12]}\n"
    )
    head = ("writes", "build", "CPU s", "x before", "redis reads", "per change", "isolated p50 ms")
    print(
        f"{head[0]:<30}{head[1]:>7}{head[2]:>8}{head[3]:>10}{head[4]:>13}{head[5]:>12}{head[6]:>17}"
    )
    for scenario in scenarios:
        base = statistics.median(results[(scenario, "before")].cpu)
        for label in ("before", "after"):
            f = results[(scenario, label)]
            cpu = statistics.median(f.cpu)
            rd = statistics.median(f.reads)
            print(
                f"{scenario:<30}{label:>7}{cpu:>8.3f}{cpu / base:>10.2f}{rd:>13.0f}"
                f"{rd / args.changes:>12.3f}{statistics.median(f.isolated_ms):>17.2f}"
            )


if __name__ == "__main__":
    main()
