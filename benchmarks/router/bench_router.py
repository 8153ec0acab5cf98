"""Router benchmark: what tfrouter costs on top of the direct path, for both route kinds.

Upstream `trs` cannot be built here (the Go module proxy refuses its module), so the columns are
the direct path (client straight to the backend), tfrouter proxying to a direct service, and
tfrouter through a reverse tunnel (tftunnel, the trc-compatible client). Goals from issue 4:
direct proxy >= 0.8x the direct path, tunnel >= 0.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import binary, free_port, port_open, stop, wait_until

HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.0\r\nHost: lat.example\r\n\r\n"


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is always reaped, with its output kept for post-mortems."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def http_backend_script(port: int) -> list[str]:
    """The latency backend runs in its own process so it does not share the client's GIL."""
    code = (
        "import asyncio, benchmarks.router.bench_router as b\n"
        "async def main():\n"
        f"    s = await asyncio.start_server(b._answer, {HOST!r}, {port}, backlog=1024)\n"
        "    await s.serve_forever()\n"
        "asyncio.run(main())\n"
    )
    return [str(Path(__file__).resolve().parents[2] / ".venv/bin/python"), "-c", code]


def router_config(path: Path, tls: int, http: int, clients: int, services: str) -> None:
    path.write_text(
        f'[server]\naddr = "{HOST}"\nport = {tls}\nhttpport = {http}\nclientsport = {clients}\n'
        + services
    )


def first_byte_latencies(port: int, n: int) -> tuple[list[float], float]:
    """Sequential connect -> request -> first response byte, in ms; and connections/s."""
    out: list[float] = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(REQUEST)
            if not s.recv(1):
                raise RuntimeError(f"no answer through port {port}")
            out.append((time.perf_counter() - t0) * 1000)
            while s.recv(4096):
                pass
    return out, n / (time.perf_counter() - start)


def iperf(port: int, seconds: int) -> float:
    """Throughput in Gbit/s received by the iperf3 server through `port`."""
    res = subprocess.run(
        ["iperf3", "-c", HOST, "-p", str(port), "-t", str(seconds), "-J"],
        capture_output=True,
        check=True,
        timeout=seconds + 30,
    )
    data = json.loads(res.stdout)
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def _opener(port: int) -> Callable[[], bool]:
    return lambda: port_open(HOST, port)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


@dataclass
class Samples:
    """Per path: iperf3 Gbit/s per round, first-byte latencies (ms), connections/s per round."""

    gbps: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    conn_rate: list[float] = field(default_factory=list)


def start_paths(st: ExitStack, tmp: Path) -> dict[str, tuple[int, int]]:
    """Starts the backends, a router with direct services, one with tunnelled services and the
    two tftunnel clients (all stopped with `st`); returns the paths measured: name ->
    (throughput port, latency port)."""
    iperf_port, http_port = free_port(), free_port()
    d_tls, d_http, d_cli = free_port(), free_port(), free_port()
    t_tls, t_http, t_cli = free_port(), free_port(), free_port()
    # direct services: iperf3 reaches CATCH_ALL through the TLS port (non-TLS bytes have no
    # SNI, so they go to CATCH_ALL exactly as in trs); latency uses Host routing on httpport
    router_config(
        tmp / "direct.toml", d_tls, d_http, d_cli,
        f'[server.services."CATCH_ALL"]\naddr = "{HOST}"\ntlsport = {iperf_port}\n'
        f'[server.services."lat.example"]\naddr = "{HOST}"\nhttpport = {http_port}\n',
    )  # fmt: skip
    router_config(
        tmp / "tunnel.toml", t_tls, t_http, t_cli,
        '[server.services."CATCH_ALL"]\nclientsecret = "1:iperf"\n'
        '[server.services."lat.example"]\nclientsecret = "1:lat"\n',
    )  # fmt: skip
    tfrouter, tftunnel = binary("tfrouter"), binary("tftunnel")
    st.enter_context(
        process(["iperf3", "-s", "-B", HOST, "-p", str(iperf_port)], tmp / "iperf.log")
    )
    st.enter_context(process(http_backend_script(http_port), tmp / "backend.log"))
    st.enter_context(process([tfrouter, "--config", str(tmp / "direct.toml")], tmp / "r1.log"))
    st.enter_context(process([tfrouter, "--config", str(tmp / "tunnel.toml")], tmp / "r2.log"))
    for port in (iperf_port, http_port, d_http, t_http, t_cli):
        wait_until(_opener(port), timeout=10, what=f"port {port}")
    remote = f"{HOST}:{t_cli}"
    for secret, local in (("1:iperf", iperf_port), ("1:lat", http_port)):
        tunnel = [tftunnel, "--secret", secret, "--remote", remote, "--local", f"{HOST}:{local}"]
        st.enter_context(process(tunnel, tmp / f"tun-{local}.log"))

    def tunnel_up() -> bool:
        try:
            first_byte_latencies(t_http, 1)
            return True
        except (OSError, RuntimeError):
            return False

    wait_until(tunnel_up, timeout=15, what="tunnel serving")
    return {
        "direct path": (iperf_port, http_port),
        "tfrouter proxy": (d_tls, d_http),
        "tfrouter tunnel": (t_tls, t_http),
    }


def measure(paths: dict[str, tuple[int, int]], args: argparse.Namespace) -> dict[str, Samples]:
    """Every path once per round, in turn (so a load change hits all of them alike)."""
    samples = {name: Samples() for name in paths}
    for _ in range(args.rounds):
        for name, (tp, hp) in paths.items():
            samples[name].gbps.append(iperf(tp, args.seconds))
            ms, cps = first_byte_latencies(hp, args.latency_n)
            samples[name].latency_ms.extend(ms)
            samples[name].conn_rate.append(cps)
    return samples


def report(samples: dict[str, Samples], args: argparse.Namespace) -> None:
    base_g = statistics.median(samples["direct path"].gbps)
    base_r = statistics.median(samples["direct path"].conn_rate)
    print(
        f"\nrouter benchmark on loopback: {args.rounds} rounds, iperf3 {args.seconds}s, "
        f"{args.latency_n} connections/round"
    )
    print(
        "(upstream trs: not measurable here, the Go module proxy refuses "
        "github.com/threefoldtech/tcprouter)\n"
    )
    head = ("path", "Gbit/s", "x direct", "conn/s", "x direct", "TTFB p50 ms", "p99 ms")
    print(
        f"{head[0]:<17}{head[1]:>9}{head[2]:>10}{head[3]:>9}{head[4]:>10}{head[5]:>13}{head[6]:>9}"
    )
    for name, s in samples.items():
        g = statistics.median(s.gbps)
        r = statistics.median(s.conn_rate)
        print(
            f"{name:<17}{g:>9.2f}{g / base_g:>10.2f}{r:>9.0f}{r / base_r:>10.2f}"
            f"{pct(s.latency_ms, 0.5):>13.3f}{pct(s.latency_ms, 0.99):>9.3f}"
        )
    print("\ngoals: tfrouter proxy >= 0.80x direct throughput, tunnel >= 0.50x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 duration per round")
    ap.add_argument("--latency-n", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-router-"))
    with ExitStack() as st:
        samples = measure(start_paths(st, tmp), args)
    report(samples, args)


if __name__ == "__main__":
    main()
