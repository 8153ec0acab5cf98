"""Tunnel throughput (issue 17 point 2): bulk transfers of `--gbytes` GB with iperf3, both
directions, side by side in one run:

- direct path: iperf3 client straight to the server;
- direct route: through tfrouter to a direct service (spliced);
- tunnel, data conns: tftunnel --pin, the authenticated protocol with data connections
  (each public connection on a TCP connection of its own, spliced by tfrouter and tftunnel);
- tunnel, in TLS: tftunnel --pin --data-in-tls, every connection a yamux stream inside the
  TLS session;
- tunnel, legacy: tftunnel without --pin, trc's clear-text yamux protocol (what trc users get);
- tunnel (before): with `--before`, the legacy tunnel with tfrouter and tftunnel built from
  `--before-rev`.

`upload` is client -> service (iperf3's default), `download` is service -> client (`-R`), the
direction a website's bodies take. Every path runs once per round, in turn, so a change of load
on this shared machine hits all of them alike; the medians are printed. CPU seconds of every
process (from /proc, and the iperf3 client's from rusage) are printed next to wall time, and
the router's CPU seconds per GB, which is what to read when the wall-clock figures move.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from benchmarks.router.bench_feed import build_before, cpu_seconds
from benchmarks.router.bench_router import process, router_config
from tests.support.processes import binary, free_port, port_open, wait_until

HOST = "127.0.0.1"
BEFORE_REV = "114e370"  # main before the tunnel work (hashicorp/yamux, 128 KiB copy buffers)


@dataclass
class Route:
    """One measured path: the port iperf3 connects to and the processes on the way."""

    port: int
    procs: dict[str, int]  # name -> pid


@dataclass
class Run:
    gbps: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def iperf(port: int, nbytes: int, reverse: bool) -> tuple[float, float]:
    """Gbit/s received and wall seconds for nbytes through port."""
    args = ["iperf3", "-c", HOST, "-p", str(port), "-n", str(nbytes), "-J"]
    if reverse:
        args.append("-R")
    for _ in range(50):
        t0 = time.monotonic()
        res = subprocess.run(args, capture_output=True, timeout=600)
        wall = time.monotonic() - t0
        data = json.loads(res.stdout)
        if "error" not in data:
            return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9, wall
        if "busy" not in data["error"]:
            raise RuntimeError(f"iperf3 through port {port}: {data['error']}")
        time.sleep(0.1)  # the server is still closing the previous test: retry
    raise RuntimeError(f"iperf3 server busy for 5 s (port {port})")


def tunnel_key(router_exe: str, config: Path) -> str:
    """The pin of the router's tunnel key (created by this call)."""
    res = subprocess.run(
        [router_exe, "--config", str(config), "-tunnel-pin"], capture_output=True, check=True
    )
    return res.stdout.decode().strip()


def start(st: ExitStack, tmp: Path, rev: str | None) -> dict[str, Route]:
    iperf_port = free_port()
    server = st.enter_context(
        process(["iperf3", "-s", "-B", HOST, "-p", str(iperf_port)], tmp / "iperf.log")
    )
    now = (binary("tfrouter"), binary("tftunnel"))
    # name -> (tfrouter, tftunnel, authenticated, extra tftunnel flags)
    builds: dict[str, tuple[str, str, bool, list[str]]] = {
        "tunnel, data conns": (*now, True, []),
        "tunnel, in TLS": (*now, True, ["--data-in-tls"]),
        "tunnel, legacy": (*now, False, []),
    }
    if rev is not None:
        before = tmp / "before"
        before.mkdir()
        builds["tunnel (before)"] = (
            build_before(rev, before),
            build_before(rev, before, "dataplane/tftunnel", "."),
            False,
            [],
        )
    direct_ports = free_port(), free_port(), free_port()
    router_config(
        tmp / "direct.toml", *direct_ports,
        f'[server.services."CATCH_ALL"]\naddr = "{HOST}"\ntlsport = {iperf_port}\n',
    )  # fmt: skip
    direct = st.enter_context(
        process([binary("tfrouter"), "--config", str(tmp / "direct.toml")], tmp / "direct.log")
    )
    paths = {
        "direct path": Route(iperf_port, {"iperf3 -s": server.pid}),
        "direct route": Route(direct_ports[0], {"tfrouter": direct.pid, "iperf3 -s": server.pid}),
    }
    for label, (router_exe, tunnel_exe, authenticated, flags) in builds.items():
        tls, http, clients = free_port(), free_port(), free_port()
        name = f"tun{len(paths)}"
        config = tmp / f"{name}.toml"
        tunnels = f'[tunnels]\nkey = "{tmp / name}.key"\n' if authenticated else ""
        router_config(
            config, tls, http, clients,
            '[server.services."CATCH_ALL"]\nclientsecret = "1:bench"\n' + tunnels,
        )  # fmt: skip
        if authenticated:
            flags = ["--pin", tunnel_key(router_exe, config), *flags]
        router = st.enter_context(
            process([router_exe, "--config", str(config)], tmp / f"{name}.log")
        )
        wait_until(partial(port_open, HOST, clients), timeout=10, what="clients port")
        tunnel = st.enter_context(
            process(
                [tunnel_exe, "--secret", "1:bench", "--remote", f"{HOST}:{clients}",
                 "--local", f"{HOST}:{iperf_port}", *flags],
                tmp / f"{name}-tftunnel.log",
            )
        )  # fmt: skip
        paths[label] = Route(
            tls, {"tfrouter": router.pid, "tftunnel": tunnel.pid, "iperf3 -s": server.pid}
        )
    for p in paths.values():
        wait_until(partial(port_open, HOST, p.port), timeout=10, what=f"port {p.port}")

    def through(port: int) -> bool:
        try:
            iperf(port, 1 << 20, False)
            return True
        except RuntimeError:
            return False

    for name, p in paths.items():
        wait_until(partial(through, p.port), timeout=20, what=f"{name} serving")
    return paths


def measure(paths: dict[str, Route], args: argparse.Namespace) -> dict[tuple[str, str], Run]:
    nbytes = int(args.gbytes * 1e9)
    runs: dict[tuple[str, str], Run] = {}
    for _ in range(args.rounds):
        for direction in ("upload", "download"):
            for name, p in paths.items():
                run = runs.setdefault((name, direction), Run())
                before = {proc: cpu_seconds(pid) for proc, pid in p.procs.items()}
                client0 = children_cpu()
                gbps, wall = iperf(p.port, nbytes, direction == "download")
                run.gbps.append(gbps)
                run.wall.append(wall)
                run.cpu.setdefault("iperf3 -c", []).append(children_cpu() - client0)
                for proc, pid in p.procs.items():
                    run.cpu.setdefault(proc, []).append(cpu_seconds(pid) - before[proc])
    return runs


def report(runs: dict[tuple[str, str], Run], args: argparse.Namespace) -> None:
    print(
        f"\ntunnel benchmark on loopback: {args.rounds} rounds of {args.gbytes:g} GB per path "
        f"and direction (iperf3 -n), medians"
        + (f"; before = {args.before_rev}" if args.before else "")
        + "\n"
    )
    head = (
        f"{'path':<20}{'direction':<10}{'Gbit/s':>8}{'x direct':>9}{'wall s':>8}"
        f"{'router CPU s/GB':>16}{'tftunnel CPU s/GB':>18}   CPU s per process"
    )
    print(head)
    gb = args.gbytes
    for direction in ("upload", "download"):
        base = statistics.median(runs[("direct path", direction)].gbps)
        for (name, d), run in runs.items():
            if d != direction:
                continue
            g = statistics.median(run.gbps)
            cpu = {proc: statistics.median(v) for proc, v in run.cpu.items()}
            per_gb = f"{cpu['tfrouter'] / gb:.2f}" if "tfrouter" in cpu else "-"
            tun_gb = f"{cpu['tftunnel'] / gb:.2f}" if "tftunnel" in cpu else "-"
            procs = ", ".join(f"{proc} {v:.2f}" for proc, v in cpu.items())
            print(
                f"{name:<20}{d:<10}{g:>8.2f}{g / base:>9.2f}{statistics.median(run.wall):>8.2f}"
                f"{per_gb:>16}{tun_gb:>18}   {procs}"
            )
    print("\ngoal (issue 17): tunnel (tftunnel) >= 0.35x the direct path in both directions")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gbytes", type=float, default=1.0, help="GB per transfer")
    ap.add_argument(
        "--before", action="store_true", help="also the legacy tunnel of the --before-rev build"
    )
    ap.add_argument("--before-rev", default=BEFORE_REV, help="git revision of the 'before' build")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    with ExitStack() as st:
        runs = measure(start(st, tmp, args.before_rev if args.before else None), args)
    report(runs, args)


if __name__ == "__main__":
    main()
