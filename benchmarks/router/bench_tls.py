"""TLS termination benchmark: full handshakes per second and bulk throughput through tfrouter,
terminated names side by side with passthrough, in one run.

Paths (all on loopback, the same Go backend `tlsbench serve` behind each):
- backend TLS: the client straight to the backend's HTTPS (the backend does the crypto);
- passthrough: through tfrouter by SNI, TLS untouched (the backend does the crypto);
- terminated http: tfrouter terminates TLS and proxies HTTP with X-Forwarded-* to the
  backend's plain port (tfrouter does the crypto and parses HTTP);
- terminated tcp: tfrouter terminates TLS and copies the bytes to the plain port.
The router's certificate is an operator file: once a name has its ACME certificate, serving
it costs the same. Every handshake is a full one (no session resumption). CPU seconds of the
router and the backend are read from /proc around each measurement, so the figures stay
comparable on a loaded machine: wall-clock rates move with other jobs, CPU per operation less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trustme

from benchmarks.router.bench_router import process
from tests.support.processes import binary, free_port, port_open, wait_until

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Target:
    name: str
    addr: str
    sni: str
    ca: Path


@dataclass
class Samples:
    hs_rate: list[float] = field(default_factory=list)
    hs_router_ms: list[float] = field(default_factory=list)  # router CPU ms per 1,000 handshakes
    hs_backend_ms: list[float] = field(default_factory=list)
    gbps: list[float] = field(default_factory=list)
    bulk_router_s: list[float] = field(default_factory=list)  # router CPU s per GB
    errors: int = 0


def run_load(tool: str, p: Target, mode: str, conns: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [tool, "load", "-addr", p.addr, "-sni", p.sni, "-ca", str(p.ca), "-conns", str(conns),
         "-seconds", str(seconds), "-mode", mode],
        capture_output=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def start(st: ExitStack, tmp: Path, tool: str) -> tuple[dict[str, Target], int, int]:
    """Backend and router; returns the paths and the pids of router and backend."""
    ca = trustme.CA()
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    files = {}
    for who, names in (("backend", ["pass.example"]), ("router", ["term.example", "raw.example"])):
        cert = ca.issue_cert(*names)
        cert.cert_chain_pems[0].write_to_path(str(tmp / f"{who}.pem"))
        cert.private_key_pem.write_to_path(str(tmp / f"{who}.key"))
        files[who] = (tmp / f"{who}.pem", tmp / f"{who}.key")
    b_tls, b_plain = free_port(), free_port()
    r_tls, r_http, r_cli = free_port(), free_port(), free_port()
    backend = st.enter_context(process(
        [tool, "serve", "-tls", f"{HOST}:{b_tls}", "-plain", f"{HOST}:{b_plain}",
         "-cert", str(files["backend"][0]), "-key", str(files["backend"][1])],
        tmp / "backend.log",
    ))  # fmt: skip
    (tmp / "router.toml").write_text(
        f'[server]\naddr = "{HOST}"\nport = {r_tls}\nhttpport = {r_http}\nclientsport = {r_cli}\n'
        f'[server.services."pass.example"]\naddr = "{HOST}"\ntlsport = {b_tls}\n'
        f'[server.services."term.example"]\naddr = "{HOST}"\nhttpport = {b_plain}\n'
        'terminate = "http"\n'
        f'[server.services."raw.example"]\naddr = "{HOST}"\nhttpport = {b_plain}\n'
        'terminate = "tcp"\n'
        f'[tls]\nstorage = "{tmp / "state"}"\n'
        f'[[tls.certificates]]\ncert = "{files["router"][0]}"\nkey = "{files["router"][1]}"\n'
    )
    router = st.enter_context(
        process([binary("tfrouter"), "--config", str(tmp / "router.toml")], tmp / "router.log")
    )
    for port in (b_tls, b_plain, r_tls):
        wait_until(partial(port_open, HOST, port), timeout=10, what=f"port {port}")
    paths = {
        "backend TLS": Target("backend TLS", f"{HOST}:{b_tls}", "pass.example", ca_file),
        "passthrough": Target("passthrough", f"{HOST}:{r_tls}", "pass.example", ca_file),
        "terminated http": Target("terminated http", f"{HOST}:{r_tls}", "term.example", ca_file),
        "terminated tcp": Target("terminated tcp", f"{HOST}:{r_tls}", "raw.example", ca_file),
    }
    return paths, router.pid, backend.pid


def measure(
    tool: str, paths: dict[str, Target], router: int, backend: int, args: argparse.Namespace
) -> dict[str, Samples]:
    """Every path once per round, in turn, so a change of load hits all of them alike."""
    samples = {name: Samples() for name in paths}
    for _ in range(args.rounds):
        for name, p in paths.items():
            s = samples[name]
            r0, b0 = cpu_seconds(router), cpu_seconds(backend)
            hs = run_load(tool, p, "handshake", args.conns, args.seconds)
            r1, b1 = cpu_seconds(router), cpu_seconds(backend)
            s.hs_rate.append(hs["ops"] / hs["seconds"])
            s.hs_router_ms.append((r1 - r0) * 1e6 / max(hs["ops"], 1))
            s.hs_backend_ms.append((b1 - b0) * 1e6 / max(hs["ops"], 1))
            bulk = run_load(tool, p, "bulk", args.bulk_conns, args.seconds)
            r2 = cpu_seconds(router)
            s.gbps.append(bulk["bytes"] * 8 / bulk["seconds"] / 1e9)
            s.bulk_router_s.append((r2 - r1) / max(bulk["bytes"] / 1e9, 1e-9))
            s.errors += int(hs["errors"] + bulk["errors"])
    return samples


def report(samples: dict[str, Samples], args: argparse.Namespace) -> None:
    med = statistics.median
    base = samples["passthrough"]
    print(
        f"\nTLS termination on loopback: {args.rounds} rounds of {args.seconds}s per path, "
        f"handshakes with {args.conns} clients, bulk with {args.bulk_conns} (GET /big)\n"
    )
    head = ("path", "hs/s", "x pass", "router ms/1k", "backend ms/1k", "Gbit/s", "x pass",
            "router s/GB", "errors")  # fmt: skip
    print(f"{head[0]:<16}{head[1]:>8}{head[2]:>8}{head[3]:>14}{head[4]:>15}"
          f"{head[5]:>8}{head[6]:>8}{head[7]:>13}{head[8]:>8}")  # fmt: skip
    for name, s in samples.items():
        print(
            f"{name:<16}{med(s.hs_rate):>8.0f}{med(s.hs_rate) / med(base.hs_rate):>8.2f}"
            f"{med(s.hs_router_ms):>14.0f}{med(s.hs_backend_ms):>15.0f}"
            f"{med(s.gbps):>8.2f}{med(s.gbps) / med(base.gbps):>8.2f}"
            f"{med(s.bulk_router_s):>13.2f}{s.errors:>8}"
        )
    print("\nms/1k: CPU milliseconds per 1,000 handshakes; s/GB: router CPU seconds per GB "
          "(backend TLS: the router is idle)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--conns", type=int, default=16, help="concurrent handshaking clients")
    ap.add_argument("--bulk-conns", type=int, default=2, help="concurrent bulk downloads")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    tool = str(tmp / "tlsbench")
    subprocess.run(["go", "build", "-o", tool, "."], cwd=HERE / "tlsbench", check=True)
    with ExitStack() as st:
        paths, router, backend = start(st, tmp, tool)
        samples = measure(tool, paths, router, backend, args)
    report(samples, args)


if __name__ == "__main__":
    main()
