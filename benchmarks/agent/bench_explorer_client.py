"""CPU per result PUT: the explorer client as it was (httpx), as it is (aiohttp), and the
result sender's lean client (explorer/put_client.py, httptools), one run.

Why: after a burst of workloads the outbox sends thousands of result PUTs, 16 at a time; the
agent's CPU per PUT bounds how fast 5,000 results can leave a 2-core gateway. A local aiohttp
server in a subprocess answers `201 null` (its CPU is not counted); this process sends the same
signed PUTs through both clients, alternating rounds, and prints the median process CPU time
per PUT and the wall time per batch side by side.

    PYTHONPATH=agent/src .venv/bin/python benchmarks/agent/bench_explorer_client.py \
        [--puts 5000] [--rounds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from tfgateway.explorer.client import ExplorerClient, ExplorerError, base_url
from tfgateway.explorer.put_client import PutClient
from tfgateway.explorer.signatures import sign_headers
from tfgateway.node.identity import Identity

SEED = b"helloworldhelloworldhelloworld12"
BODY = b'{"workload_id":"4521-1","category":6,"data_json":null,"state":1,"message":""}\n'


class Client(Protocol):
    async def put_result(self, gwid: str, body: bytes) -> None: ...

    async def aclose(self) -> None: ...


class HttpxExplorer:
    """The previous ExplorerClient's PUT path, kept here only to compare against: an httpx
    AsyncClient with the same headers, signing, URL building and status check."""

    def __init__(self, url: str, identity: Identity, timeout: float = 15.0) -> None:
        self.base = base_url(url)
        self.identity = identity
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": "tfgateway/2"},
        )

    async def put_result(self, gwid: str, body: bytes) -> None:
        url = f"{self.base}/reservations/nodes/{self.identity.node_id}/workloads/{gwid}"
        try:
            response = await self._http.request(
                "PUT", url, content=body, headers=sign_headers(self.identity)
            )
        except httpx.HTTPError as exc:
            raise ExplorerError(f"PUT {url}: request failure: {exc}", retryable=True) from exc
        if response.status_code != 201:
            raise ExplorerError(f"PUT {url}: HTTP {response.status_code}", retryable=False)

    async def aclose(self) -> None:
        await self._http.aclose()


async def serve() -> None:
    """The stand-in explorer (subprocess mode): every request gets `201 null`."""
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(status=201, body=b"null\n")

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


async def batch(client: Client, puts: int, concurrency: int) -> tuple[float, float]:
    """Send `puts` PUTs from `concurrency` workers; (CPU seconds, wall seconds)."""
    next_id = iter(range(puts))

    async def worker() -> None:
        for i in next_id:
            await client.put_result(f"{i + 1}-1", BODY)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(make: Callable[[], Client], puts: int, concurrency: int) -> tuple[float, float]:
    client = make()
    try:
        await batch(client, min(500, puts), concurrency)  # warm up: connections, code paths
        return await batch(client, puts, concurrency)
    finally:
        await client.aclose()


async def bench(url: str, puts: int, rounds: int, concurrency: int) -> None:
    identity = Identity(SEED)
    clients: dict[str, Callable[[], Client]] = {
        "httpx (before)": lambda: HttpxExplorer(url, identity),
        "aiohttp (now)": lambda: ExplorerClient(url, identity),
        "lean (sender)": lambda: PutClient(base_url(url), identity),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    for r in range(rounds):
        order = list(clients) if r % 2 == 0 else list(reversed(clients))
        for name in order:
            results[name].append(await measure(clients[name], puts, concurrency))
    print(f"{puts} result PUTs per round, concurrency {concurrency}, {rounds} rounds (medians)")
    print(f"{'client':<16} {'CPU µs/PUT':>11} {'wall s/batch':>13} {'PUTs/s':>9}")
    medians: dict[str, float] = {}
    for name, runs in results.items():
        cpu = statistics.median(c for c, _ in runs) / puts * 1e6
        wall = statistics.median(w for _, w in runs)
        medians[name] = cpu
        print(f"{name:<16} {cpu:>11.0f} {wall:>13.2f} {puts / wall:>9.0f}")
    before, now = medians["httpx (before)"], medians["aiohttp (now)"]
    print(f"CPU per PUT, httpx / aiohttp: {before / now:.1f}x")
    print(f"CPU per PUT, aiohttp / lean: {now / medians['lean (sender)']:.1f}x")
    cpu = time.process_time()
    for _ in range(puts):
        sign_headers(identity)
    signing = (time.process_time() - cpu) / puts * 1e6
    print(f"of which signing (ed25519 + headers, same in both): {signing:.0f} µs/PUT")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--puts", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve:
        asyncio.run(serve())
        return 0
    if a.puts < 1 or a.rounds < 1 or a.concurrency < 1:
        p.error("--puts, --rounds and --concurrency must be positive")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.strip().isdigit():
            p.error(f"the stand-in explorer did not start (said {line!r})")
        asyncio.run(bench(f"http://127.0.0.1:{line.strip()}", a.puts, a.rounds, a.concurrency))
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
