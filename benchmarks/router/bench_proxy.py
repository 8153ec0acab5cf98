"""Ports 80/443 direct routes: the router against the direct path, side by side in one run.

- `throughput`: bulk HTTP by Host and TLS by SNI (passthrough), both directions, and iperf3
  both directions, straight to the backend, through tfrouter and through HAProxy (TCP mode,
  splicing: the reference for a splicing proxy), alternating, with the CPU seconds of the
  proxy, the backend and the client next to the wall time; connect → first byte
  p50/p99; and `strace -c -f` of tfrouter during a bulk download (splice against read/write).
- `fair`: first-byte latency of requests from other sources while idle and while one source
  holds 20,000 unfinished connections (two processes of 10,000, HTTP and TLS).
- `conns`: thousands of proxied connections held open with light traffic (a small request per
  connection every few seconds): every one served, tfrouter's RSS and CPU.

Load and backend are `proxybench/` (Go, standard library only), built by the benchmark. Not
part of the test suite: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.support.processes import binary, free_port, port_open, stop, wait_until

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def client(tool: str, *args: str) -> tuple[dict[str, Any], float]:
    """Runs a proxybench client to its end: its JSON line and its CPU seconds."""
    proc = subprocess.Popen([tool, *args], stdout=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"proxybench {' '.join(args)} failed ({proc.returncode})")
    return json.loads(out.splitlines()[-1]), usage.ru_utime + usage.ru_stime


class Stack:
    """The backend (plain and TLS), iperf3, and tfrouter routing bulk.example to them."""

    def __init__(
        self,
        st: ExitStack,
        tmp: Path,
        router: str = "",
        extra: str = "",
        router_args: tuple[str, ...] = (),
    ) -> None:
        self.tool = str(tmp / "proxybench")
        subprocess.run(["go", "build", "-o", self.tool, "."], cwd=HERE / "proxybench", check=True)
        self.plain, self.tlsp, self.iperf = free_port(), free_port(), free_port()
        self.r_tls, self.r_http, r_cli = free_port(), free_port(), free_port()
        self.r_cli = r_cli
        self.tmp = tmp
        self.conf = conf = tmp / "router.toml"
        conf.write_text(
            f'[server]\naddr = "{HOST}"\nport = {self.r_tls}\nhttpport = {self.r_http}\n'
            f"clientsport = {r_cli}\n"
            f'[server.services."bulk.example"]\naddr = "{HOST}"\n'
            f"httpport = {self.plain}\ntlsport = {self.tlsp}\n"
            f'[server.services."CATCH_ALL"]\naddr = "{HOST}"\ntlsport = {self.iperf}\n' + extra
        )
        self.backend = st.enter_context(
            process(
                [
                    self.tool,
                    "serve",
                    "-plain",
                    f"{HOST}:{self.plain}",
                    "-tls",
                    f"{HOST}:{self.tlsp}",
                ],
                tmp / "backend.log",
            )
        )
        st.enter_context(
            process(["iperf3", "-s", "-B", HOST, "-p", str(self.iperf)], tmp / "iperf.log")
        )
        self.router = st.enter_context(
            process(
                [router or binary("tfrouter"), "--config", str(conf), *router_args],
                tmp / "router.log",
            )
        )
        for port in (self.plain, self.tlsp, self.iperf, self.r_http, self.r_tls):
            wait_until(functools.partial(port_open, HOST, port), timeout=15, what=f"port {port}")


def variant_router(st: ExitStack, s: Stack, spec: str) -> tuple[str, int, int, int]:
    """Another tfrouter (`NAME=BINARY[:VAR=VALUE...]`, e.g. an experimental build or
    GOMAXPROCS=1) with the same routes on its own ports: name, HTTP port, TLS port, pid."""
    name, _, rest = spec.partition("=")
    exe, *env = rest.split(":")
    if not name or not exe:
        raise SystemExit(f"--variant {spec!r}: expected NAME=BINARY[:VAR=VALUE...]")
    tls, http, cli = free_port(), free_port(), free_port()
    conf = s.tmp / f"router-{name}.toml"
    text = s.conf.read_text()
    text = text.replace(f"port = {s.r_tls}\n", f"port = {tls}\n", 1)
    text = text.replace(f"httpport = {s.r_http}\n", f"httpport = {http}\n", 1)
    text = text.replace(f"clientsport = {s.r_cli}\n", f"clientsport = {cli}\n", 1)
    conf.write_text(text)
    with (s.tmp / f"router-{name}.log").open("wb") as out:
        proc = subprocess.Popen(
            [exe, "--config", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **dict(e.split("=", 1) for e in env)),
        )
    st.callback(stop, proc)
    for port in (http, tls):
        wait_until(functools.partial(port_open, HOST, port), timeout=15, what=f"{name} {port}")
    return name, http, tls, proc.pid


def switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of pid so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
        except OSError:
            continue  # the thread ended
    return total


def iperf(port: int, seconds: int, reverse: bool) -> tuple[float, float]:
    """Gbit/s received, and the iperf3 client's CPU seconds."""
    args = ["iperf3", "-c", HOST, "-p", str(port), "-t", str(seconds), "-J"]
    proc = subprocess.Popen([*args, "-R"] if reverse else args, stdout=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"iperf3 through {port} failed")
    data = json.loads(out)
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9, (
        usage.ru_utime + usage.ru_stime
    )


HAPROXY_CFG = """global
    nbthread 2
    tune.pipesize 1048576
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option splice-request
    option splice-response
"""


def start_haproxy(
    st: ExitStack, tmp: Path, s: Stack
) -> tuple[subprocess.Popen[bytes], int, int, int]:
    """HAProxy in TCP mode, splicing both ways (its own kernel-speed path), in front of the
    same backend and iperf3: the reference for what a splicing proxy costs on this machine."""
    http, tls, ip = free_port(), free_port(), free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(
        HAPROXY_CFG
        + "".join(
            f"listen l{front}\n    bind {HOST}:{front}\n    server b {HOST}:{back}\n"
            for front, back in ((http, s.plain), (tls, s.tlsp), (ip, s.iperf))
        )
    )
    proc = st.enter_context(process(["haproxy", "-f", str(cfg), "-db"], tmp / "haproxy.log"))
    for port in (http, tls, ip):
        wait_until(functools.partial(port_open, HOST, port), timeout=15, what=f"port {port}")
    return proc, http, tls, ip


# One measurement: Gbit/s, the proxy's CPU s, the backend's CPU s, the client's CPU s, wall s, GB,
# the proxy's context switches.
Sample = tuple[float, float, float, float, float, float, int]


def throughput(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    with ExitStack() as st:
        s = Stack(st, tmp)
        hap, h_http, h_tls, h_ip = start_haproxy(st, tmp, s)
        size = str(args.mib << 20)
        tests: dict[str, tuple[str, ...]] = {
            "HTTP by Host, download": ("bulk", "-dir", "down", "-bytes", size),
            "HTTP by Host, upload": ("bulk", "-dir", "up", "-bytes", size),
            "TLS by SNI, download": ("bulk", "-tls", "-dir", "down", "-bytes", size),
            "TLS by SNI, upload": ("bulk", "-tls", "-dir", "up", "-bytes", size),
        }
        # name -> (http port, tls port, iperf port, the proxy's pid or 0)
        paths = {
            "direct": (s.plain, s.tlsp, s.iperf, 0),
            "tfrouter": (s.r_http, s.r_tls, s.r_tls, s.router.pid),
            "haproxy": (h_http, h_tls, h_ip, hap.pid),
        }
        for spec in args.variant:
            name, vh, vt, vpid = variant_router(st, s, spec)
            paths[name] = (vh, vt, vt, vpid)
        res: dict[str, dict[str, list[Sample]]] = {}
        lat: dict[str, list[float]] = {p: [] for p in paths}

        def cpu(pid: int) -> float:
            return cpu_seconds(pid) if pid else 0.0

        def csw(pid: int) -> int:
            return switches(pid) if pid else 0

        for _ in range(args.rounds):
            for path, (hp, tp, ip, pid) in paths.items():
                for name, cmd in tests.items():
                    port = tp if "-tls" in cmd else hp
                    p0, b0, t0, s0 = cpu(pid), cpu(s.backend.pid), time.monotonic(), csw(pid)
                    out, ccpu = client(s.tool, *cmd, "-addr", f"{HOST}:{port}")
                    wall = time.monotonic() - t0
                    res.setdefault(name, {}).setdefault(path, []).append(
                        (float(out["gbps"]), cpu(pid) - p0, cpu(s.backend.pid) - b0, ccpu,
                         wall, float(out["bytes"]) / 1e9, csw(pid) - s0)
                    )  # fmt: skip
                for rev in (False, True):
                    name = "iperf3 " + ("-R (download)" if rev else "(upload)")
                    p0, t0, s0 = cpu(pid), time.monotonic(), csw(pid)
                    g, ccpu = iperf(ip, args.seconds, rev)
                    wall = time.monotonic() - t0
                    res.setdefault(name, {}).setdefault(path, []).append(
                        (g, cpu(pid) - p0, 0.0, ccpu, wall, g * args.seconds / 8, csw(pid) - s0)
                    )
                out, _ = client(s.tool, "ttfb", "-n", str(args.latency_n), "-addr", f"{HOST}:{hp}")
                lat[path].extend(float(x) for x in out["ms"])
        trace = strace_bulk(s, tmp, size)
    print(
        f"\ndirect routes on loopback: {args.rounds} rounds, bulk {args.mib} MiB per transfer, "
        f"iperf3 {args.seconds} s, {args.latency_n} connections/round for first byte; medians.\n"
        "Gbit/s and x the direct path; the proxy's CPU seconds per GB; wall seconds and the "
        "client's and backend's CPU seconds per transfer (direct / tfrouter / haproxy).\n"
        "haproxy: TCP mode, splicing both ways, 2 threads: the reference for a splicing proxy."
    )
    print(
        f"{'transfer':<24}{'direct':>8}{'tfrouter':>9}{'x':>6}{'haproxy':>9}{'x':>6}"
        f"{'CPU s/GB tfr':>14}{'hap':>6}{'wall s d/t/h':>16}{'client CPU d/t/h':>18}"
        f"{'backend CPU d/t/h':>19}"
    )

    def med(xs: list[Sample], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    for name, per in res.items():
        d, t, h = per["direct"], per["tfrouter"], per["haproxy"]
        gd, gt, gh = med(d, 0), med(t, 0), med(h, 0)
        print(
            f"{name:<24}{gd:>8.2f}{gt:>9.2f}{gt / gd:>6.2f}{gh:>9.2f}{gh / gd:>6.2f}"
            f"{med(t, 1) / med(t, 5):>14.2f}{med(h, 1) / med(h, 5):>6.2f}"
            f"{med(d, 4):>8.1f}/{med(t, 4):.1f}/{med(h, 4):.1f}"
            f"{med(d, 3):>8.2f}/{med(t, 3):.2f}/{med(h, 3):.2f}"
            f"{med(d, 2):>9.2f}/{med(t, 2):.2f}/{med(h, 2):.2f}"
        )
    # The CPU budget: every process's CPU seconds per GB (proxy + backend + client). Where the
    # cores are the bound, throughput is inversely proportional to it: direct / proxied is
    # the ratio a proxy can reach at that cost whatever the load, and cores x 8 / (s/GB) the
    # Gbit/s the machine's cores could carry if nothing else ran.
    cores = os.cpu_count() or 1
    print(
        f"\nCPU budget: CPU s per GB of all processes (proxy + backend + client); x = direct's "
        f"/ the proxied path's (the ratio when the cores are the bound); ceiling = {cores} "
        f"cores x 8 / (s/GB), Gbit/s"
    )
    print(
        f"{'transfer':<24}{'direct':>8}{'ceiling':>9}{'tfrouter':>9}{'x':>6}{'ceiling':>9}"
        f"{'haproxy':>9}{'x':>6}{'ceiling':>9}"
    )

    def total(xs: list[Sample]) -> float:
        return statistics.median((x[1] + x[2] + x[3]) / x[5] for x in xs)

    for name, per in res.items():
        if name.startswith("iperf3"):
            continue  # the iperf3 server's CPU is not read
        cd, ct, ch = total(per["direct"]), total(per["tfrouter"]), total(per["haproxy"])
        print(
            f"{name:<24}{cd:>8.2f}{cores * 8 / cd:>9.1f}{ct:>9.2f}{cd / ct:>6.2f}"
            f"{cores * 8 / ct:>9.1f}{ch:>9.2f}{cd / ch:>6.2f}{cores * 8 / ch:>9.1f}"
        )
    proxies = [p for p in paths if p != "direct"]
    print(
        "\nevery proxy: Gbit/s, x direct, its CPU s per GB and its context switches per GB "
        "(all threads, from /proc)"
    )
    print(f"{'transfer':<24}{'proxy':<12}{'Gbit/s':>8}{'x':>6}{'CPU s/GB':>10}{'switches/GB':>13}")
    for name, per in res.items():
        gd = med(per["direct"], 0)
        for p in proxies:
            xs = per[p]
            gb = med(xs, 5)
            print(
                f"{name:<24}{p:<12}{med(xs, 0):>8.2f}{med(xs, 0) / gd:>6.2f}"
                f"{med(xs, 1) / gb:>10.2f}{med(xs, 6) / gb:>13.0f}"
            )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the end: {load} (1, 5, 15 min)")
    print("\nconnect -> first byte ms      p50     p99   added p50   added p99")
    d50, d99 = pct(lat["direct"], 0.5), pct(lat["direct"], 0.99)
    for path in paths:
        p50, p99 = pct(lat[path], 0.5), pct(lat[path], 0.99)
        print(f"{path:<26}{p50:>8.3f}{p99:>8.3f}{p50 - d50:>+12.3f}{p99 - d99:>+12.3f}")
    print(
        "goals: tfrouter >= 0.80x direct for every transfer; added first byte <= 0.3 ms p50, "
        "<= 1 ms p99"
    )
    print(f"\nstrace -c -f -p <tfrouter> during one {args.mib} MiB download by Host:\n{trace}")


def strace_bulk(s: Stack, tmp: Path, size: str) -> str:
    """Syscall counts of tfrouter during one bulk download through it."""
    out = tmp / "strace.txt"
    tr = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(s.router.pid)], stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)  # strace attaches to every thread before the transfer starts
    client(s.tool, "bulk", "-dir", "down", "-bytes", size, "-addr", f"{HOST}:{s.r_http}")
    tr.send_signal(signal.SIGINT)
    tr.wait(30)
    text = out.read_text()
    keep = [
        ln
        for ln in text.splitlines()
        if re.search(r"% time|---|total|splice|read|write|send|recv|epoll|futex", ln)
    ]
    return "\n".join(keep)


def fair(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fair-"))
    with ExitStack() as st:
        s = Stack(st, tmp)
        probe = (
            "ttfb",
            "-n",
            str(args.latency_n),
            "-addr",
            f"{HOST}:{s.r_http}",
            "-src",
            "127.0.0.3,127.0.0.4,127.0.0.5",
        )
        idle, _ = client(s.tool, *probe)
        rss0 = rss_kib(s.router.pid)
        floods = []
        for mode, port in (("http", s.r_http), ("tls", s.r_tls)):
            p = subprocess.Popen(
                [
                    s.tool,
                    "flood",
                    "-addr",
                    f"{HOST}:{port}",
                    "-src",
                    "127.0.0.2",
                    "-n",
                    str(args.flood // 2),
                    "-mode",
                    mode,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            st.callback(stop, p)
            floods.append(p)
        opened = 0
        for p in floods:
            line = p.stdout.readline() if p.stdout else b"{}"
            opened += int(json.loads(line)["attempted"])
        c0 = cpu_seconds(s.router.pid)
        attacked, _ = client(s.tool, *probe)
        c1 = cpu_seconds(s.router.pid)
        rss1 = rss_kib(s.router.pid)
        for p in floods:
            if p.stdin:
                p.stdin.close()
    i_ms = [float(x) for x in idle["ms"]]
    a_ms = [float(x) for x in attacked["ms"]]
    print(
        f"\nfairness: {args.latency_n} sequential requests from 3 other sources, "
        f"idle vs while 127.0.0.2 holds {opened} unfinished connections (HTTP + TLS)"
    )
    print(f"{'':<14}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
    print(f"{'idle':<14}{pct(i_ms, 0.5):>9.3f}{pct(i_ms, 0.99):>9.3f}{idle['failed']:>8}")
    print(
        f"{'under attack':<14}{pct(a_ms, 0.5):>9.3f}{pct(a_ms, 0.99):>9.3f}{attacked['failed']:>8}"
    )
    print(
        f"{'x idle':<14}{pct(a_ms, 0.5) / pct(i_ms, 0.5):>9.2f}"
        f"{pct(a_ms, 0.99) / pct(i_ms, 0.99):>9.2f}"
    )
    print(
        f"tfrouter RSS {rss0} KiB before the flood, {rss1} KiB during; CPU during the probe "
        f"{c1 - c0:.2f} s. Goal: p99 under attack within 2x idle."
    )


def metrics(port: int) -> dict[str, float]:
    """The router's Go runtime figures (heap and stacks in use, goroutines) from /metrics."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = ("go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in want:
            out[name] = float(value)
    return out


def served(port: int, host: str) -> bool:
    """One request for host through the router's HTTP port is answered."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as c:
            c.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Group:
    """Client processes holding connections to one host until their stdin is closed."""

    def __init__(
        self, st: ExitStack, s: Stack, host: str, n: int, sources: list[str], every: float
    ) -> None:
        self.n, self.procs = n, []
        for k, src in enumerate(sources):
            count = n // len(sources) + (1 if k < n % len(sources) else 0)
            p = subprocess.Popen(
                [s.tool, "hold", "-n", str(count), "-addr", f"{HOST}:{s.r_http}", "-host", host,
                 "-src", src, "-every", f"{every}s", "-stdin"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )  # fmt: skip
            st.callback(stop, p)
            self.procs.append(p)

    def opened(self) -> int:
        """Waits until every connection was attempted: those that failed."""
        return sum(
            int(json.loads(p.stdout.readline() if p.stdout else b"{}")["failed"])
            for p in self.procs
        )

    def done(self) -> tuple[int, int, int]:
        """Releases the connections: served to the end, failed, requests answered."""
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
        served = failed = requests = 0
        for p in self.procs:
            for line in (p.stdout.read() if p.stdout else b"").splitlines():
                res = json.loads(line)
                if res.get("event") == "done":
                    served += int(res["served"])
                    failed += int(res["failed"])
                    requests += int(res["requests"])
        return served, failed, requests


def settle(pids: list[int], seconds: float) -> list[int]:
    """Median RSS KiB of each process over `seconds` (a sample every 0.5 s)."""
    samples: list[list[int]] = [[] for _ in pids]
    end = time.monotonic() + seconds
    while True:
        for i, pid in enumerate(pids):
            samples[i].append(rss_kib(pid))
        if time.monotonic() >= end:
            return [int(statistics.median(x)) for x in samples]
        time.sleep(0.5)


def conns(args: argparse.Namespace) -> None:
    """Direct connections first, then (with --tunnels) as many through reverse tunnels, each
    group's memory measured once it is open and has made its first requests; then all held
    together for --hold seconds."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-conns-"))
    n_tun = args.n // 2 if args.tunnels else 0
    n_dir = args.n - n_tun
    per_tunnel = -(-n_tun // args.tunnels) if args.tunnels else 0
    secrets = [f"{i + 1}:bench{i}" for i in range(args.tunnels)]
    extra = "".join(
        f'[server.services."t{i}.example"]\nclientsecret = "{sec}"\n'
        for i, sec in enumerate(secrets)
    )
    if args.tunnels:
        extra += f'[tunnels]\nkey = "{tmp / "tunnel.pem"}"\nmax_streams = {max(1024, per_tunnel)}\n'
    mport = free_port()
    with ExitStack() as st:
        s = Stack(st, tmp, args.router, extra, ("--metrics", f"{HOST}:{mport}"))
        router = s.router.pid
        tunnels: list[subprocess.Popen[bytes]] = []
        if args.tunnels:
            exe = args.router or binary("tfrouter")
            pin = subprocess.run(
                [exe, "--config", str(s.conf), "-tunnel-pin"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            for i, sec in enumerate(secrets):
                auth = ["--pin", pin] if i % 2 else []  # every other tunnel authenticated
                tunnels.append(
                    st.enter_context(
                        process(
                            [binary("tftunnel"), "--secret", sec, "--remote",
                             f"{HOST}:{s.r_cli}", "--local", f"{HOST}:{s.plain}", *auth],
                            tmp / f"tftunnel{i}.log",
                        )
                    )
                )  # fmt: skip
            for i in range(args.tunnels):
                host = f"t{i}.example"
                wait_until(functools.partial(served, s.r_http, host), timeout=20, what=host)
        tun_pids = [t.pid for t in tunnels]
        pids = [router, *tun_pids]
        base = settle(pids, 2)
        # Phases, each opened and measured once its connections made their first requests:
        # the direct half (20 source addresses per client process), then the legacy tunnels'
        # share of the other half, then the authenticated (--pin) tunnels' share.
        phases: list[Phase] = [Phase("idle", 0, 0.0, base, metrics(mport), fds(router), [])]
        plan: list[tuple[str, list[tuple[str, int, list[str]]]]] = [
            ("direct", [("bulk.example", n_dir, [",".join(f"127.0.{10 + k}.{i}" for i in
                        range(1, 11)) for k in range(args.procs)])]),
        ]  # fmt: skip
        for kind, first in (("tunnel, legacy", 0), ("tunnel, --pin", 1)):
            idx = range(first, args.tunnels, 2)
            plan.append(
                (kind, [(f"t{i}.example", n_tun // args.tunnels + (i < n_tun % args.tunnels),
                         [",".join(f"127.0.{40 + i}.{j}" for j in range(1, 11))]) for i in idx])
            )  # fmt: skip
        failed_open = 0
        for kind, members in plan:
            if not members or not sum(n for _, n, _ in members):
                continue
            t0 = time.monotonic()
            gs = [Group(st, s, host, n, srcs, args.every) for host, n, srcs in members]
            failed_open += sum(g.opened() for g in gs)
            opened = time.monotonic() - t0
            rss = settle(pids, args.every + 1)
            phases.append(
                Phase(kind, sum(g.n for g in gs), opened, rss, metrics(mport), fds(router), gs)
            )
        # all held together
        c0 = [cpu_seconds(p) for p in pids]
        w0 = time.monotonic()
        peak = [0] * len(pids)
        while time.monotonic() - w0 < args.hold:
            for i, pid in enumerate(pids):
                peak[i] = max(peak[i], rss_kib(pid))
            time.sleep(0.5)
        held = [rss_kib(p) for p in pids]
        c1 = [cpu_seconds(p) for p in pids]
        w1 = time.monotonic()
        results = {ph.name: [g.done() for g in ph.groups] for ph in phases[1:]}
    print(
        f"\n{args.n} proxied connections: {n_dir} direct ({args.procs} client processes, "
        f"{args.procs * 10} source addresses) and {n_tun} through {args.tunnels} reverse tunnels "
        f"(tftunnel, every other one authenticated with --pin, {per_tunnel} streams each); HTTP "
        f"keep-alive, one small request per connection every {args.every} s; opened in turn, "
        f"then all held together {args.hold} s"
    )
    srv = sum(r[0] for rs in results.values() for r in rs)
    fl = sum(r[1] for rs in results.values() for r in rs)
    req = sum(r[2] for rs in results.values() for r in rs)
    print(
        f"served to the end: {srv} of {args.n} ("
        + ", ".join(f"{k} {sum(r[0] for r in rs)}" for k, rs in results.items())
        + f"); failed: {fl} (at open: {failed_open}); requests answered: {req}"
    )
    print(
        f"\n{'tfrouter after opening':<24}{'conns':>7}{'open s':>8}{'RSS KiB':>9}{'fds':>7}"
        f"{'heap MiB':>10}{'stacks MiB':>11}{'goroutines':>11}"
    )
    for ph in phases:
        print(
            f"{ph.name:<24}{ph.n:>7}{ph.opened:>8.1f}{ph.rss[0]:>9}{ph.fds:>7}"
            f"{ph.heap / 2**20:>10.1f}{ph.stacks / 2**20:>11.1f}{ph.goroutines:>11.0f}"
        )
    print(f"{'all held (end, peak)':<24}{'':>7}{'':>8}{held[0]:>9}   peak {peak[0]} KiB")
    print("\nper connection, each group against the one before (goal <= 64 KiB of router memory):")
    print(
        f"{'':<24}{'RSS KiB':>9}{'heap KiB':>10}{'stacks KiB':>11}{'fds':>6}{'goroutines':>11}"
        f"{'tftunnel RSS KiB':>18}"
    )
    for prev, ph in itertools.pairwise(phases):
        n = ph.n
        tun = ""
        if ph.name.startswith("tunnel"):
            first = 0 if "legacy" in ph.name else 1
            grow = [
                (ph.rss[1 + i] - base[1 + i]) / (n / len(ph.groups))
                for i in range(first, args.tunnels, 2)
            ]
            tun = f"{statistics.median(grow):.1f}"
        print(
            f"{ph.name:<24}{(ph.rss[0] - prev.rss[0]) / n:>9.1f}"
            f"{(ph.heap - prev.heap) / 1024 / n:>10.1f}"
            f"{(ph.stacks - prev.stacks) / 1024 / n:>11.1f}"
            f"{(ph.fds - prev.fds) / n:>6.1f}{(ph.goroutines - prev.goroutines) / n:>11.1f}"
            f"{tun:>18}"
        )
    cpu_t = sum(c1[1:]) - sum(c0[1:])
    print(
        f"\nCPU while held {w1 - w0:.1f} s: tfrouter {c1[0] - c0[0]:.2f} s "
        f"({100 * (c1[0] - c0[0]) / (w1 - w0):.1f}% of a core), all tftunnels {cpu_t:.2f} s; "
        f"tftunnel RSS idle {statistics.median(base[1:]) if tun_pids else 0} KiB; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


class Phase:
    """The router's state after one group of connections was opened."""

    def __init__(
        self, name: str, n: int, opened: float, rss: list[int], m: dict[str, float], fds: int,
        groups: list[Group],
    ) -> None:  # fmt: skip
        self.name, self.n, self.opened, self.rss, self.fds, self.groups = (
            name, n, opened, rss, fds, groups,
        )  # fmt: skip
        self.heap = m.get("go_memstats_heap_inuse_bytes", 0.0)
        self.stacks = m.get("go_memstats_stack_inuse_bytes", 0.0)
        self.goroutines = m.get("go_goroutines", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--mib", type=int, default=1024, help="MiB per bulk transfer")
    t.add_argument("--seconds", type=int, default=4, help="iperf3 duration")
    t.add_argument("--latency-n", type=int, default=500)
    t.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BINARY[:VAR=VALUE...]",
        help="another tfrouter measured in turn with the others (an experimental build, or "
        "this one with e.g. GOMAXPROCS=1); repeatable",
    )
    f = sub.add_parser("fair")
    f.add_argument("--latency-n", type=int, default=2000)
    f.add_argument("--flood", type=int, default=20000)
    c = sub.add_parser("conns")
    c.add_argument(
        "-n", type=int, default=10000, help="connections (half through tunnels with --tunnels)"
    )
    c.add_argument(
        "--tunnels", type=int, default=10,
        help="reverse tunnels (tftunnel, every other one authenticated) carrying half of -n; "
        "0: all direct",
    )  # fmt: skip
    c.add_argument("--procs", type=int, default=2)
    c.add_argument("--every", type=float, default=5.0)
    c.add_argument("--hold", type=float, default=30.0)
    c.add_argument("--router", default="", help="another tfrouter binary (e.g. main's)")
    args = ap.parse_args()
    {"throughput": throughput, "fair": fair, "conns": conns}[args.cmd](args)


if __name__ == "__main__":
    main()
