"""Workloads file reloads against a real redis-server (docs/workloads.md): N subdomain and proxy
entries applied from nothing, then a file with C of them changed, added or removed (a third
each), then the same file again. Prints, side by side, wall time, this process's CPU seconds and
redis-server's CPU seconds for each step, and the provisioner calls made (only the touched
entries' must be).

Usage: benchmarks/declared/run.sh [--entries N] [--changes C]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

from tests.support.redis_server import RedisServer
from tfgateway.declared.source import DeclaredSource
from tfgateway.node.identity import Identity
from tfgateway.primitives.dns import DelegateProvisioner, DNSStore, SubdomainProvisioner
from tfgateway.primitives.name_proofs import NameProofs
from tfgateway.primitives.provisioner import Provisioner
from tfgateway.primitives.proxy import ProxyProvisioner
from tfgateway.store.batch import AutoPipeline
from tfgateway.store.url import connect

DOMAIN = "gw.example"


def entry(i: int, ip: str = "203.0.113.7", prefix: str = "e") -> str:
    name = f"{prefix}{i}"
    if i % 2:
        return (
            f'[[proxy]]\nname = "{name}"\ndomain = "{name}.{DOMAIN}"\naddress = "{ip}"\n'
            "port = 80\nport_tls = 443\n"
        )
    return f'[[subdomain]]\nname = "{name}"\ndomain = "{name}.{DOMAIN}"\naddresses = ["{ip}"]\n'


def redis_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


async def main(n: int, changes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            client = connect(server.url)
            batch = AutoPipeline(client)
            names = NameProofs.first_come(batch)
            node = Identity(b"2" * 32).node_id
            dns = DNSStore(batch, node, ["ns1.gw.example"], proofs=names)
            await dns.setup_managed_domains([DOMAIN])
            provisioners: dict[str, Provisioner] = {
                "subdomain": SubdomainProvisioner(dns),
                "domain_delegate": DelegateProvisioner(dns),
                "proxy": ProxyProvisioner(batch, node, proofs=names, allow_private=True,
                                          declared=True),
            }  # fmt: skip
            path = Path(tmp) / "workloads.toml"
            source = DeclaredSource(path, batch, provisioners, allow_private=True)
            third = changes // 3
            first = "".join(entry(i) for i in range(n))
            second = (
                "".join(entry(i, ip="203.0.113.8") for i in range(third))  # changed
                + "".join(entry(i) for i in range(third, n - third))  # kept; the tail removed
                + "".join(entry(i, prefix="new") for i in range(changes - 2 * third))  # added
            )
            pid = server.proc.pid if server.proc is not None else 0
            print(f"{'step':<34} {'wall s':>8} {'agent cpu s':>12} {'redis cpu s':>12} "
                  f"{'calls':>6}  summary")  # fmt: skip
            for label, text in (
                (f"{n} entries from nothing", first),
                (f"{changes} changed/added/removed", second),
                ("same file again", second),
            ):
                path.write_text(text)
                calls = source.calls
                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                r0 = redis_cpu(pid) if pid else 0.0
                t0 = time.perf_counter()
                summary = await source.reload()
                wall = time.perf_counter() - t0
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                r1 = redis_cpu(pid) if pid else 0.0
                cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
                print(f"{label:<34} {wall:>8.3f} {cpu:>12.3f} {r1 - r0:>12.3f} "
                      f"{source.calls - calls:>6}  {summary}")  # fmt: skip
            await client.aclose()
        finally:
            server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=1000)
    p.add_argument("--changes", type=int, default=100)
    a = p.parse_args()
    asyncio.run(main(a.entries, a.changes))
