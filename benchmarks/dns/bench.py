"""DNS benchmark: the gateway's CoreDNS plugin against CoreDNS's own file plugin, measured
side by side in one run on loopback.

Two numbers matter for the gateway (issue 3):
  * queries per second of CoreDNS+gatewaydns relative to CoreDNS+file on the same zone
    (goal >= 0.9x), measured with dnsperf in alternating rounds;
  * change-to-visible latency: time from a write until DNS answers with it (goal < 100 ms),
    for gatewaydns with and without `cache`, and for stock CoreDNS serving a zone file that
    is rewritten (file plugin, `reload 1s`). The third-party redis plugin cannot be built
    here (the Go module proxy refuses it), so it is not compared.

A third section (--sections bulk) measures what filling one zone with many names costs the
plugin, with its reload pacing off and on (CPU seconds, zone reloads, isolated-change latency).

Not a test: timings depend on the machine. Run it through run.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import itertools
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventT
from pathlib import Path
from typing import TYPE_CHECKING, cast

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import redis
from prober import ChannelTap, ProbeStats, RawAgentWriter, UdpProber, percentile
from redis.typing import EncodableT, FieldT

from tfgateway.primitives.dns import DNSStore
from tfgateway.primitives.name_proofs import NameProofs
from tfgateway.store.url import connect

if TYPE_CHECKING:
    SynchronizedInt = Synchronized[int]

ZONE = "bench.test."
# A zone of the size a gateway's managed domain typically has, for the latency probes.
SMALL_ZONE = "small.test."
SMALL_OWNERS = 100
LOOPBACK = "127.0.0.1"
AGENT_CHANNEL = "tfgateway:dns"
# The zone the bulk section fills, as the agent fills a managed domain's zone.
BULK_ZONE = "bulk.test."
# Rows of the latency section: (row label, server, writer label); writers in latency_section.
LATENCY_ROWS = (
    ("gatewaydns", "gatewaydns", "agent"),
    ("gatewaydns, plain HSET", "gatewaydns", "plain"),
    ("gatewaydns+cache", "gatewaydns+cache", "agent"),
    ("file+reload", "file+reload", "file"),
)
# Servers whose changes are not pushed: few samples, each may wait up to --slow-deadline.
SLOW_SERVERS = ("gatewaydns+cache", "file+reload")


def free_port() -> int:
    """A port free for both UDP and TCP on loopback, as CoreDNS listens on both."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((LOOPBACK, 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port


def wait_for(pred: object, timeout: float, what: str) -> None:
    """Poll pred() until true or fail with what."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def query(
    port: int, name: str, rdtype: str = "A", timeout: float = 0.5
) -> dns.message.Message | None:
    q = dns.message.make_query(name, rdtype)
    try:
        return dns.query.udp(q, LOOPBACK, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None


def answer_ips(msg: dns.message.Message | None) -> set[str]:
    if msg is None:
        return set()
    return {rd.to_text() for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


@dataclass
class Server:
    """One CoreDNS process under test."""

    label: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0


@contextmanager
def coredns(
    binary: str | list[str],
    label: str,
    corefile: str,
    workdir: Path,
    probe: str = ZONE,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    server = start_coredns(binary, label, corefile, workdir, probe, env)
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def start_coredns(
    binary: str | list[str],
    label: str,
    corefile: str,
    workdir: Path,
    probe: str,
    env: dict[str, str] | None = None,
) -> Server:
    """A CoreDNS answering for probe; a port taken by another process between free_port()
    and CoreDNS's bind (other jobs run on this machine) is replaced by another."""
    for _ in range(3):
        port = free_port()
        while str(port) in corefile:  # e.g. the metrics port, chosen but not yet bound
            port = free_port()
        conf = workdir / f"Corefile.{label}"
        conf.write_text(corefile.replace("PORT", str(port)))
        log = workdir / f"{label}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*([binary] if isinstance(binary, str) else binary), "-conf", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                # A session of its own, as a service has: the kernel's autogroup scheduling
                # then does not lump it with the benchmark's own processes.
                start_new_session=True,
            )
        wait_for(
            lambda proc=proc, port=port: (
                proc.poll() is not None
                or ((m := query(port, "h0." + probe)) is not None and len(m.answer) > 0)
            ),
            60,
            f"{label} to answer",
        )
        if proc.poll() is None:
            return Server(label, port, proc, log)
        if "address already in use" not in log.read_text():
            break
    raise RuntimeError(f"{label} exited: {log.read_text()[-2000:]}")


def zone_fields(owners: int) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {}
    for i in range(owners):
        rec: dict[str, object] = {
            "a": [{"ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "ttl": 3600}]
        }
        if i % 4 == 0:
            rec["txt"] = [{"text": f"owner {i}", "ttl": 600}]
        fields[f"h{i}"] = json.dumps(rec, separators=(",", ":"))
    fields["probe"] = json.dumps({"a": [{"ip": "10.255.0.1", "ttl": 300}]})
    return fields


def zone_file(zone: str, owners: int, serial: int = 1, extra: dict[str, str] | None = None) -> str:
    """The same zone as zone_fields, as the file plugin reads it (TTLs capped at 300 as the
    plugins serve them); extra sets the address of further owners (or of the probe)."""
    addrs = {"probe": "10.255.0.1", **(extra or {})}
    lines = [
        f"{zone} 300 IN SOA ns1.{ZONE} hostmaster.{ZONE} {serial} 7200 1800 1209600 60",
        f"{zone} 300 IN NS ns1.{ZONE}",
    ]
    for i in range(owners):
        lines.append(f"h{i}.{zone} 300 IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
        if i % 4 == 0:
            lines.append(f'h{i}.{zone} 300 IN TXT "owner {i}"')
    for owner, ip in sorted(addrs.items()):
        lines.append(f"{owner}.{zone} 300 IN A {ip}")
    return "\n".join(lines) + "\n"


class RedisWriter:
    """Changes data the way the agent does: HSET/HDEL on the zone hash."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def set(self, zone: str, owner: str, ip: str) -> None:
        self.r.hset(zone, owner, json.dumps({"a": [{"ip": ip, "ttl": 300}]}))

    def remove(self, zone: str, owner: str) -> None:
        self.r.hdel(zone, owner)


class AgentWriter(RedisWriter):
    """Changes data exactly as the agent does: one transaction that sets the field and names
    it on the agent's channel (`ZONE FIELD`), so the plugin reads just that field. The
    plugin hears of it twice: keyspace event and PUBLISH."""

    def set(self, zone: str, owner: str, ip: str) -> None:
        agent_writes(self.r, zone, [(owner, json.dumps({"a": [{"ip": ip, "ttl": 300}]}))])

    def remove(self, zone: str, owner: str) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(zone, owner)
            pipe.publish(AGENT_CHANNEL, f"{zone} {owner}")
            pipe.execute()


class ZoneOnlyWriter(RedisWriter):
    """The agent's transactions before issue 17: the PUBLISH names the zone only, so the
    plugin reads the whole zone hash (paced)."""

    def set(self, zone: str, owner: str, ip: str) -> None:
        agent_writes(
            self.r, zone, [(owner, json.dumps({"a": [{"ip": ip, "ttl": 300}]}))], fields=False
        )


class AgentStoreWriter(RedisWriter):
    """The agent's own code: DNSStore.add_subdomain, as a subdomain workload makes it (its
    reads, its checks, its transaction and message), in a domain the gateway manages."""

    def __init__(self, r: redis.Redis) -> None:
        super().__init__(r)
        kw = r.connection_pool.connection_kwargs
        self.loop = asyncio.new_event_loop()
        self.aredis = connect(f"tcp://{kw['host']}:{kw['port']}")
        self.store = DNSStore(
            self.aredis, "bench-gateway", [f"ns1.{ZONE}"], proofs=NameProofs.first_come(self.aredis)
        )

    def manage(self, zone: str) -> None:
        """Make zone one of the gateway's managed domains, as `--domains` does."""
        self.loop.run_until_complete(self.store.setup_managed_domains([zone]))

    def set(self, zone: str, owner: str, ip: str) -> None:
        name = f"{owner}.{zone.rstrip('.')}"
        addr = ipaddress.ip_address(ip)
        self.loop.run_until_complete(self.store.add_subdomain("bench-user", name, [addr]))

    def close(self) -> None:
        self.loop.run_until_complete(self.aredis.aclose())
        self.loop.close()


def agent_writes(
    r: redis.Redis, zone: str, items: list[tuple[str, str]], fields: bool = True
) -> None:
    """Send len(items) agent transactions (MULTI, HSET, PUBLISH, EXEC) in one pipeline; the
    PUBLISH names the field (`ZONE FIELD`, the agent's format) or, fields=False, the zone
    only."""
    pipe = r.pipeline(transaction=False)
    send = cast(Callable[..., object], pipe.execute_command)  # untyped in redis-py
    for field, value in items:
        send("MULTI")
        send("HSET", zone, field, value)
        send("PUBLISH", AGENT_CHANNEL, f"{zone} {field}" if fields else zone)
        send("EXEC")
    pipe.execute()


class ZoneFileWriter:
    """Changes data the stock way: rewrite the zone file with a higher serial (atomically)."""

    def __init__(self, paths: dict[str, Path], owners: dict[str, int]) -> None:
        self.paths, self.owners = paths, owners
        self.extra: dict[str, dict[str, str]] = {z: {} for z in paths}
        self.serial = 1
        for zone in paths:
            self._write(zone)

    def _write(self, zone: str) -> None:
        self.serial += 1
        tmp = self.paths[zone].with_suffix(".tmp")
        tmp.write_text(zone_file(zone, self.owners[zone], self.serial, self.extra[zone]))
        tmp.replace(self.paths[zone])

    def set(self, zone: str, owner: str, ip: str) -> None:
        self.extra[zone][owner] = ip
        self._write(zone)

    def remove(self, zone: str, owner: str) -> None:
        self.extra[zone].pop(owner, None)
        self._write(zone)


def query_file(owners: int, path: Path) -> None:
    """80 % existing A, 10 % names that do not exist, 10 % types the names lack (NODATA)."""
    lines = []
    for i in range(10000):
        k = i % 10
        if k < 8:
            lines.append(f"h{(i * 7919) % owners}.{ZONE} A")
        elif k == 8:
            lines.append(f"missing{i}.{ZONE} A")
        else:
            lines.append(f"h{(i * 104729) % owners}.{ZONE} AAAA")
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Round:
    """One dnsperf run against one server."""

    qps: float
    cpu_us_per_query: float  # the server's user+system CPU time per completed query

    @property
    def per_cpu_s(self) -> float:
        """Queries answered per CPU-second of the server: unlike QPS, barely moved by other
        jobs on the machine (they take wall time from the server, not CPU per query)."""
        return 1e6 / self.cpu_us_per_query if self.cpu_us_per_query > 0 else 0.0


@dataclass
class Paired:
    """dnsperf rounds of two servers, a and b, taken in alternating order (a b, b a, ...), so
    that a drift in the machine's load falls on both alike."""

    a: list[Round]
    b: list[Round]

    def median_qps(self) -> tuple[float, float]:
        return statistics.median(r.qps for r in self.a), statistics.median(r.qps for r in self.b)

    def qps_ratio(self) -> float:
        """Median of the per-round a/b QPS ratios (runs seconds apart)."""
        return statistics.median(x.qps / y.qps for x, y in zip(self.a, self.b, strict=True))

    def median_per_cpu_s(self) -> tuple[float, float]:
        return (
            statistics.median(r.per_cpu_s for r in self.a),
            statistics.median(r.per_cpu_s for r in self.b),
        )

    def cpu_ratio(self) -> float:
        """Median of the per-round ratios of queries per CPU-second, a/b."""
        return statistics.median(
            x.per_cpu_s / y.per_cpu_s for x, y in zip(self.a, self.b, strict=True)
        )


def paired_rounds(
    a: Server, b: Server, qfile: Path, seconds: float, rounds: int, start: int = 0
) -> Paired:
    """`rounds` rounds of each server, round k (counted from `start`) taking a first when k
    is even: calls pooled with consecutive starts alternate as one call would."""
    out = Paired([], [])
    for k in range(start, start + rounds):
        first, second = (a, b) if k % 2 == 0 else (b, a)
        r1, r2 = dnsperf(first, qfile, seconds), dnsperf(second, qfile, seconds)
        out.a.append(r1 if first is a else r2)
        out.b.append(r2 if first is a else r1)
    return out


def load_note() -> str:
    """The machine's load average, printed next to timings taken on a shared machine."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(server: Server, deadline: float = 20.0) -> None:
    """Wait (up to `deadline` s) until the server is idle: at most one clock tick of CPU in
    half a second. A server started right before its round may still be reading its zones
    (the resync after subscribing) or collecting the load's garbage; counted in the round,
    that CPU is charged to the queries (seen as 0.86-1.05x swings between the runs of the
    same code at 50,000 names). Taken before every round of either server alike."""
    end = time.perf_counter() + deadline
    tick = 1 / os.sysconf("SC_CLK_TCK")
    while time.perf_counter() < end:
        c0 = cpu_seconds(server.proc.pid)
        time.sleep(0.5)  # a measuring window, not a synchronisation
        if cpu_seconds(server.proc.pid) - c0 <= tick:
            return
    print(f"  note: {server.label}: still busy after {deadline:.0f} s; measuring", file=sys.stderr)


def dnsperf(server: Server, qfile: Path, seconds: float) -> Round:
    port = server.port
    wait_quiet(server)
    cpu0 = cpu_seconds(server.proc.pid)
    out = subprocess.run(
        [
            "dnsperf",
            "-s",
            LOOPBACK,
            "-p",
            str(port),
            "-d",
            str(qfile),
            "-l",
            str(seconds),
            "-c",
            "4",
            "-q",
            "200",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    cpu = cpu_seconds(server.proc.pid) - cpu0
    if not m or not done:
        raise RuntimeError(f"dnsperf output not understood:\n{out}")
    if lost and int(lost.group(1)) > 0:
        print(f"  note: {server.label}: {lost.group(1)} queries lost", file=sys.stderr)
    return Round(float(m.group(1)), cpu * 1e6 / max(1, int(done.group(1))))


@dataclass
class Latency:
    samples_ms: list[float]
    timeouts: int

    def pct(self, p: float) -> float | None:
        if not self.samples_ms:
            return None
        s = sorted(self.samples_ms)
        return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def change_latency(
    writer: RedisWriter | ZoneFileWriter,
    port: int,
    probe: Probe,
    samples: int,
    deadline: float,
    quiet: float,
) -> Latency:
    """Write, then poll DNS until the new data is served.

    change: the probe owner gets a new address (it was queried just before, so a cache in
    front holds the old one). add: a new owner appears (queried before, so a cache holds
    the NXDOMAIN). Each sample is an isolated change: `quiet` seconds pass before it, longer
    than gatewaydns's pause between two reloads of a zone."""
    out: list[float] = []
    timeouts = 0
    for i in range(samples):
        time.sleep(quiet)
        ip = f"10.254.{i // 250}.{i % 250 + 1}"
        field = "probe" if probe.kind == "change" else f"new{port}x{i}"
        name = f"{field}.{probe.zone}"
        query(port, name)  # the state before, as a client (and a cache) saw it
        t0 = time.perf_counter()
        writer.set(probe.zone, field, ip)
        while True:
            if ip in answer_ips(query(port, name)):
                out.append((time.perf_counter() - t0) * 1000)
                break
            if time.perf_counter() - t0 > deadline:
                timeouts += 1
                break
        if probe.kind == "add":
            writer.remove(probe.zone, field)
    return Latency(out, timeouts)


@dataclass
class Probe:
    """A latency scenario: what changes, in which zone."""

    kind: str  # "change" or "add"
    zone: str
    owners: int

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.owners} owners)"


@dataclass
class BulkRun:
    """One fill of BULK_ZONE as seen from one server."""

    cpu_s: float  # server CPU (user+system) from the first write until the end of the window
    reloads: int  # zone reloads the server made meanwhile (its loads_total metric)
    visible_s: float  # first write -> the last name is answered


def zone_reloads(metrics_port: int, kinds: tuple[str, ...] = ("zone",)) -> int:
    """Sum of coredns_gatewaydns_loads_total{kind=...} from the server's prometheus: whole
    reads of a zone ("zone") or of all zones ("full")."""
    url = f"http://{LOOPBACK}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("coredns_gatewaydns_loads_total{") and any(
            f'kind="{k}"' in line for k in kinds
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def bulk_ip(i: int) -> str:
    return f"10.77.{i // 250}.{i % 250 + 1}"


def bulk_fill(
    r: redis.Redis,
    server: Server,
    metrics_port: int,
    names: int,
    batch: int,
    every: float,
    settle: float,
) -> BulkRun:
    """Add `names` owners to an empty BULK_ZONE with agent transactions, `batch` per pipeline
    every `every` seconds (batch 1, every 0: one at a time, back to back), and measure the
    server until the last is answered plus `settle` seconds (a paced reload may follow)."""
    r.delete(BULK_ZONE)
    wait_for(
        lambda: (
            (m := query(server.port, f"b0.{BULK_ZONE}")) is not None
            and m.rcode() != dns.rcode.NOERROR
        ),
        10,
        f"{BULK_ZONE} emptied",
    )
    time.sleep(settle)  # the reloads of the DEL are not part of the measurement
    items = [
        (f"b{i}", json.dumps({"a": [{"ip": bulk_ip(i), "ttl": 300}]}, separators=(",", ":")))
        for i in range(names)
    ]
    last = f"b{names - 1}.{BULK_ZONE}"
    cpu0, loads0 = cpu_seconds(server.proc.pid), zone_reloads(metrics_port)
    t0 = time.perf_counter()
    for k, start in enumerate(range(0, names, batch)):
        agent_writes(r, BULK_ZONE, items[start : start + batch], fields=False)
        if every > 0:
            time.sleep(max(0.0, t0 + (k + 1) * every - time.perf_counter()))
    deadline = time.perf_counter() + 60
    while bulk_ip(names - 1) not in answer_ips(query(server.port, last)):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{server.label}: {last} not answered 60 s after the writes")
        time.sleep(0.005)
    visible = time.perf_counter() - t0
    time.sleep(settle)
    run = BulkRun(cpu_seconds(server.proc.pid) - cpu0, zone_reloads(metrics_port) - loads0, visible)
    for i in range(0, names, max(1, names // 50)):
        if bulk_ip(i) not in answer_ips(query(server.port, f"b{i}.{BULK_ZONE}")):
            raise RuntimeError(f"{server.label}: b{i}.{BULK_ZONE} not served after the fill")
    return run


def bulk_section(args: argparse.Namespace, tfgw: Path, rport: int, work: Path) -> None:
    """CPU cost of filling one zone with many names, with reload pacing off and on, run one
    server at a time (each server would react to the others' writes), plus the latency of an
    isolated change in the filled zone."""
    r = redis.Redis(host=LOOPBACK, port=rport, decode_responses=True)
    settings = {"coalesce 0 (off)": "0", f"coalesce {args.coalesce}": args.coalesce}
    scenarios = {
        f"bursts of {args.bulk_batch} every {args.bulk_every * 1000:.0f} ms": (
            args.bulk_batch,
            args.bulk_every,
        ),
        f"one every {args.bulk_steady_ms} ms": (1, args.bulk_steady_ms / 1000),
        "one at a time, no pause": (1, 0.0),
    }
    runs: dict[tuple[str, str], BulkRun] = {}
    lats: dict[str, Latency] = {}
    for label, coalesce in settings.items():
        mport = free_port()
        conf = (
            f".:PORT {{\n  bind {LOOPBACK}\n  prometheus {LOOPBACK}:{mport}\n"
            f"  gatewaydns {{\n    address {LOOPBACK}:{rport}\n    nameservers ns1.{ZONE}\n"
            f"    coalesce {coalesce}\n  }}\n}}\n"
        )
        with coredns(str(tfgw), f"bulk-{coalesce}", conf, work) as server:
            for scenario, (batch, every) in scenarios.items():
                runs[(scenario, label)] = bulk_fill(
                    r, server, mport, args.bulk_names, batch, every, settle=0.3
                )
            lats[label] = change_latency(
                ZoneOnlyWriter(r),
                server.port,
                Probe("change", BULK_ZONE, args.bulk_names),
                args.samples,
                5.0,
                quiet=args.quiet_ms / 1000,
            )
    r.delete(BULK_ZONE)

    off, on = settings
    print(
        f"\nBulk writes into one zone: {args.bulk_names} names added to an empty {BULK_ZONE} by "
        "transactions naming the zone only\n(MULTI/HSET/PUBLISH ZONE/EXEC, the agent before "
        "issue 17: every change a whole read, what pacing is for); one server at a time"
    )
    print(
        f"{'scenario':30} {'setting':18} {'CPU s':>7} {'reloads':>8} {'visible s':>10}"
        f" {'CPU ms/name':>12}"
    )
    for scenario in scenarios:
        for label in settings:
            b = runs[(scenario, label)]
            print(
                f"{scenario:30} {label:18} {b.cpu_s:7.2f} {b.reloads:8d} {b.visible_s:10.2f}"
                f" {b.cpu_s * 1000 / args.bulk_names:12.3f}"
            )
        a, b = runs[(scenario, off)], runs[(scenario, on)]
        print(
            f"{'':30} {'off/on':18} {a.cpu_s / max(b.cpu_s, 0.01):6.1f}x "
            f"{a.reloads / max(b.reloads, 1):7.1f}x"
        )
    print(
        f"\nIsolated change in the filled zone ({args.bulk_names} names; zone-only transaction, "
        f"{args.quiet_ms} ms quiet before each), ms"
    )
    print(f"{'setting':18} {'p50':>8} {'p99':>8} {'max':>8} {'timeouts':>9}")
    for label, lat in lats.items():
        peak = max(lat.samples_ms) if lat.samples_ms else None
        print(
            f"{label:18} {fmt_ms(lat.pct(50))} {fmt_ms(lat.pct(99))} {fmt_ms(peak)} "
            f"{lat.timeouts:>9}"
        )
    print(
        "(CPU s: the server's user+system time from the first write until the last name is "
        "answered plus 0.3 s;\n reloads: zone reloads it made; visible s: first write -> last "
        "name answered)"
    )


SCALE_ZONE = "scale.test."
# The same stream into a small zone, on the same server in the same run: what this machine
# gives any change at that moment, next to which the large zone's figures are read.
CONTROL_ZONE = "control.test."
CONTROL_OWNERS = 100


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scale_zone_file(owners: int, path: Path) -> None:
    """SCALE_ZONE as zone_fields(owners) renders it, for the file plugin."""
    path.write_text(zone_file(SCALE_ZONE, owners).replace(f".{ZONE}", f".{SCALE_ZONE}"))


def scale_queries(owners: int, path: Path) -> None:
    path.write_text(
        "".join(
            f"h{(i * 7919) % owners}.{SCALE_ZONE} A\n"
            if i % 10 < 8
            else f"missing{i}.{SCALE_ZONE} A\n"
            if i % 10 == 8
            else f"h{(i * 104729) % owners}.{SCALE_ZONE} AAAA\n"
            for i in range(10000)
        )
    )


def stream_changes(
    rport: int,
    db: int,
    zone: str,
    owners: int,
    rate: float,
    seconds: float,
    names: bool,
    stop: EventT,
    written: SynchronizedInt,
) -> None:
    """Agent transactions at `rate` per second into zone, each changing one existing owner's
    address; the PUBLISH names the field (`ZONE FIELD`, the agent's format), or with
    names=False the zone only (the agent's format before issue 17). Runs in a process of its
    own, so that it never holds the prober's interpreter lock; the count goes to `written`."""
    r = redis.Redis(host=LOOPBACK, port=rport, db=db, decode_responses=True)
    t0 = time.perf_counter()
    n = 0
    while not stop.is_set() and time.perf_counter() - t0 < seconds:
        field = f"h{(n * 7919) % owners}"
        value = json.dumps({"a": [{"ip": bulk_ip(n % 60000), "ttl": 3600}]}, separators=(",", ":"))
        pipe = r.pipeline(transaction=True)
        pipe.hset(zone, field, value)
        pipe.publish(AGENT_CHANNEL, f"{zone} {field}" if names else zone)
        pipe.execute()
        n += 1
        written.value = n
        time.sleep(max(0.0, t0 + n / rate - time.perf_counter()))


CHANGE_STAGES = ("total", "wait", "read", "build", "serial")
Histogram = dict[str, dict[float, float]]  # stage -> bucket upper bound (s) -> cumulative count


def change_histogram(metrics_port: int) -> Histogram:
    """The plugin's coredns_gatewaydns_change_seconds buckets (empty for a plugin without it)."""
    url = f"http://{LOOPBACK}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: Histogram = {}
    pat = re.compile(
        r'coredns_gatewaydns_change_seconds_bucket\{stage="(\w+)",le="([^"]+)"\} (\S+)'
    )
    for m in pat.finditer(text):
        le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
        out.setdefault(m.group(1), {})[le] = float(m.group(3))
    return out


def histogram_diff(after: Histogram, before: Histogram) -> Histogram:
    return {
        st: {le: n - before.get(st, {}).get(le, 0.0) for le, n in buckets.items()}
        for st, buckets in after.items()
    }


def histogram_add(a: Histogram, b: Histogram) -> Histogram:
    out = {st: dict(bk) for st, bk in a.items()}
    for st, buckets in b.items():
        for le, n in buckets.items():
            out.setdefault(st, {})[le] = out.get(st, {}).get(le, 0.0) + n
    return out


def histogram_pct(h: Histogram, stage: str, p: float) -> str:
    """The bucket bound under which p % of the stage's observations fall, as '<=X' ms."""
    buckets = sorted(h.get(stage, {}).items())
    if not buckets or buckets[-1][1] <= 0:
        return "-"
    want = buckets[-1][1] * p / 100
    for le, n in buckets:
        if n >= want:
            return ">1000" if le == float("inf") else f"<={le * 1000:g}"
    return "-"


GC_LINE = re.compile(
    r"gc \d+ @[\d.]+s \d+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock, "
    r"[\d.]+\+([\d.]+)/([\d.]+)/([\d.]+)\+[\d.]+ ms cpu, (\d+)->(\d+)->(\d+) MB, (\d+) MB goal"
)


@dataclass
class GcStats:
    """GODEBUG=gctrace=1 lines of a server during the streams."""

    cycles: int = 0
    pause_ms: list[float] = dataclasses.field(default_factory=list)  # both stop-the-world phases
    mark_ms: list[float] = dataclasses.field(default_factory=list)  # concurrent mark, wall
    assist_ms: float = 0.0  # mutator assist CPU, summed
    live_mb: int = 0  # the largest heap live after a cycle
    goal_mb: int = 0

    def add_log(self, text: str) -> None:
        for m in GC_LINE.finditer(text):
            self.cycles += 1
            self.pause_ms.append(float(m.group(1)) + float(m.group(3)))
            self.mark_ms.append(float(m.group(2)))
            self.assist_ms += float(m.group(4))
            self.live_mb = max(self.live_mb, int(m.group(9)))
            self.goal_mb = max(self.goal_mb, int(m.group(10)))


@dataclass
class ScaleRun:
    """The change -> visible streams of one server and writer, pooled over repetitions."""

    label: str
    stats: ProbeStats = dataclasses.field(default_factory=ProbeStats)
    written: int = 0  # stream changes
    probes: int = 0  # probe changes
    wall_s: float = 0.0
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)  # per process, summed
    p99s: list[float] = dataclasses.field(default_factory=list)  # of each repetition
    loads: list[float] = dataclasses.field(default_factory=list)  # 1-min load at each start
    hist: Histogram = dataclasses.field(default_factory=dict)
    gc: GcStats = dataclasses.field(default_factory=GcStats)
    whole_reads: int = 0  # of a zone or of all zones, during the streams

    def add(self, res: StreamResult) -> None:
        self.stats.extend(res.stats)
        self.written += res.written
        self.probes += res.probes
        self.wall_s += res.wall
        for k, v in res.cpu.items():
            self.cpu[k] = self.cpu.get(k, 0.0) + v
        self.p99s.append(percentile(res.stats.upper_ms, 99) or 0.0)
        self.hist = histogram_add(self.hist, res.hist)
        self.gc.add_log(res.gc_log)
        self.whole_reads += res.whole_reads

    def cpu_ms_per_change(self) -> float:
        return self.cpu.get("coredns", 0.0) * 1000 / max(1, self.written + self.probes)


@dataclass
class StreamResult:
    stats: ProbeStats
    written: int
    probes: int
    wall: float
    cpu: dict[str, float]
    hist: Histogram
    gc_log: str
    whole_reads: int


@dataclass
class Stream:
    """What a scale stream writes: into which zone (of how many names), in which format."""

    label: str
    zone: str
    owners: int
    names: bool  # the PUBLISH names the field (the agent's format), else the zone only
    agent_code: bool = False  # the probe is a new name added by the agent's DNSStore
    small: bool = False  # on the server of redis db 1, which holds only the 100-name zone


PROBE_NAMES = itertools.count()


def scale_stream(
    server: Server, rport: int, rpid: int, args: argparse.Namespace, stream: Stream
) -> StreamResult:
    """Stream changes into a zone and meanwhile measure isolated probe changes in it."""
    db = 1 if stream.small else 0
    mp = multiprocessing.get_context("fork")
    stop, written = mp.Event(), mp.Value("i", 0)
    proc = mp.Process(
        target=stream_changes,
        args=(
            rport,
            db,
            stream.zone,
            stream.owners,
            args.scale_rate,
            args.scale_seconds,
            stream.names,
            stop,
            written,
        ),
    )
    hist0 = change_histogram(server.metrics_port)
    reads0 = zone_reloads(server.metrics_port, ("zone", "full"))
    log_at = server.log.stat().st_size
    pids = {"coredns": server.proc.pid, "redis-server": rpid, "bench (this)": os.getpid()}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.perf_counter()
    proc.start()
    assert proc.pid is not None
    writer: AgentStoreWriter | RawAgentWriter
    if stream.agent_code:
        writer = AgentStoreWriter(redis.Redis(host=LOOPBACK, port=rport, decode_responses=True))
    else:
        writer = RawAgentWriter(rport, db, stream.names)
    prober = UdpProber(server.port)
    tap = None if stream.agent_code else ChannelTap(rport)
    stats = ProbeStats()
    # The measuring side runs first when it wakes (SCHED_FIFO), so that the load of the
    # machine does not delay its writes and queries; not for the agent's code, whose own
    # time is part of what that stream measures.
    realtime = args.prober_priority == "fifo" and not stream.agent_code
    if realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    try:
        probes = probe_loop(server, stream, args, writer, prober, tap, stats, t0)
    finally:
        if realtime:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    writer_cpu = cpu_seconds(proc.pid)
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    cpu["bench (this)"] += writer_cpu
    stop.set()
    proc.join()
    wall = time.perf_counter() - t0
    writer.close()
    prober.close()
    if tap:
        tap.close()
    with server.log.open() as f:
        f.seek(log_at)
        gc_log = f.read()
    hist = histogram_diff(change_histogram(server.metrics_port), hist0)
    reads = zone_reloads(server.metrics_port, ("zone", "full")) - reads0
    return StreamResult(stats, written.value, probes, wall, cpu, hist, gc_log, reads)


def probe_loop(
    server: Server,
    stream: Stream,
    args: argparse.Namespace,
    writer: AgentStoreWriter | RawAgentWriter,
    prober: UdpProber,
    tap: ChannelTap | None,
    stats: ProbeStats,
    t0: float,
) -> int:
    """Isolated probe changes every 50 ms until the stream ends; returns how many."""
    probes = 0
    while time.perf_counter() - t0 < args.scale_seconds - 0.5:
        time.sleep(0.05)
        probes += 1
        ip = f"10.254.{probes // 250}.{probes % 250 + 1}"
        owner = f"new{next(PROBE_NAMES)}" if stream.agent_code else "probe"
        if tap:
            tap.drain()
        if isinstance(writer, AgentStoreWriter):
            at = time.time_ns()
            writer.set(stream.zone, owner, ip)
        else:
            at = writer.send(stream.zone, owner, json.dumps({"a": [{"ip": ip, "ttl": 300}]}))
        seen = len(stats.upper_ms)
        prober.wait_visible(f"{owner}.{stream.zone}", ip, at, stats)
        if tap and len(stats.upper_ms) > seen and (pub := tap.published(f"{stream.zone} {owner}")):
            stats.published_ms.append((pub - at) / 1e6)
            stats.after_publish_ms.append(stats.upper_ms[-1] - (pub - at) / 1e6)
    return probes


def scale_section(
    args: argparse.Namespace, binaries: dict[str, Path], rport: int, rpid: int, work: Path
) -> None:
    """One zone of --scale-owners names: memory, QPS against the file plugin, and change ->
    visible latency while changes stream in at --scale-rate per second, next to a server of
    one 100-name zone under the same stream."""
    r = redis.Redis(host=LOOPBACK, port=rport, decode_responses=True)
    r.delete(SCALE_ZONE)
    fields = zone_fields(args.scale_owners)
    items = list(fields.items())
    for i in range(0, len(items), 5000):
        r.hset(SCALE_ZONE, mapping=dict(items[i : i + 5000]))
    records = sum(2 if i % 4 == 0 else 1 for i in range(args.scale_owners)) + 1
    zfile, qfile = work / "db.scale", work / "queries.scale"
    scale_zone_file(args.scale_owners, zfile)
    scale_queries(args.scale_owners, qfile)
    limits = "    max_fields_per_zone 100000\n    max_records_per_zone 200000\n"

    def conf(db: int) -> str:
        return (
            f".:PORT {{\n  bind {LOOPBACK}\n  prometheus {LOOPBACK}:MPORT\n"
            f"  gatewaydns {{\n    address {LOOPBACK}:{rport}\n    db {db}\n"
            f"    nameservers ns1.{ZONE}\n{limits}  }}\n}}\n"
        )

    # The file plugin's server block is the gatewaydns one with the data plugin swapped:
    # `prometheus` too (the scale section reads the gatewaydns servers' metrics), since its
    # per-query accounting (a request counter and duration/size histograms per query) costs
    # 7-17 % of a query's CPU at this scale (README.md, section 4) whichever plugin answers.
    file_conf = (
        f".:PORT {{\n  bind {LOOPBACK}\n  prometheus {LOOPBACK}:{free_port()}\n"
        f"  file {zfile} {SCALE_ZONE}\n}}\n"
    )
    r.delete(CONTROL_ZONE)
    r.hset(CONTROL_ZONE, mapping=zone_fields(CONTROL_OWNERS))
    r1 = redis.Redis(host=LOOPBACK, port=rport, db=1, decode_responses=True)
    r1.delete(CONTROL_ZONE)
    r1.hset(CONTROL_ZONE, mapping=zone_fields(CONTROL_OWNERS))
    # The scale zone a managed domain of the agent (apex and owner fields), before any
    # server loads it, for the stream whose probe is the agent's own code.
    manager = AgentStoreWriter(r)
    manager.manage(SCALE_ZONE)
    manager.close()
    n = f"{args.scale_owners:,}"
    streams = [
        Stream(f"{n} names: names fields", SCALE_ZONE, args.scale_owners, True),
        Stream(f"{n}: agent code, new names", SCALE_ZONE, args.scale_owners, True, True),
        Stream(f"{CONTROL_OWNERS} names, same server", CONTROL_ZONE, CONTROL_OWNERS, True),
        Stream(
            f"{CONTROL_OWNERS} names, own server", CONTROL_ZONE, CONTROL_OWNERS, True, small=True
        ),
    ]
    if not args.scale_no_zone_only:
        streams.append(Stream(f"{n}: zone only", SCALE_ZONE, args.scale_owners, False))
    runs = {(b, st.label): ScaleRun(f"{b}, {st.label}") for b in binaries for st in streams}
    qps_rows: list[tuple[str, Paired]] = []
    facts: dict[str, tuple[float, float, float]] = {}  # label -> RSS MiB big, small; start s
    # label -> RSS MiB of its large-zone server in each repetition: after load, at the end
    rss_log: dict[str, list[tuple[float, float]]] = {}
    qps_pool: dict[str, Paired] = {}  # label -> its QPS rounds against `file`, all repetitions
    qps_done = dict.fromkeys(binaries, 0)  # label -> QPS rounds taken so far
    order = list(binaries.items())
    envs = {label: {**os.environ, "GODEBUG": "gctrace=1"} for label in binaries}
    launch = {label: [str(binary)] for label, binary in binaries.items()}
    for label, binary in binaries.items():
        if " GOGC=" in label:  # a variant of a binary with another GC percentage
            envs[label]["GOGC"] = label.split(" GOGC=", 1)[1]
        if " nice=" in label:  # a variant of a binary at another CPU priority
            launch[label] = ["nice", "-n", label.split(" nice=", 1)[1], str(binary)]
    with coredns(str(binaries["after"]), "scale-file", file_conf, work, probe=SCALE_ZONE) as fsrv:
        file_rss = rss_mib(fsrv.proc.pid)
        if args.scale_plain_file:
            # What `prometheus` costs per query: the same file server without it, against it.
            plain = f".:PORT {{\n  bind {LOOPBACK}\n  file {zfile} {SCALE_ZONE}\n}}\n"
            with coredns(
                str(binaries["after"]), "scale-file-plain", plain, work, probe=SCALE_ZONE
            ) as psrv:
                qps_rows.append(
                    (
                        "file, no prometheus",
                        paired_rounds(psrv, fsrv, qfile, args.seconds, args.rounds),
                    )
                )
        for rep in range(args.scale_repeat):
            # Binaries take turns going first, so a drift in the machine's load falls on both.
            for label, _ in order if rep % 2 == 0 else order[::-1]:
                # A nice variant runs the shared redis-server at its priority too, meanwhile.
                nice = int(label.split(" nice=", 1)[1]) if " nice=" in label else 0
                set_nice(rpid, nice)
                for small in (False, True):
                    mport = free_port()
                    t0 = time.perf_counter()
                    with coredns(
                        launch[label],
                        f"scale-{label}-{'small' if small else 'big'}",
                        conf(1 if small else 0).replace("MPORT", str(mport)),
                        work,
                        probe=CONTROL_ZONE if small else SCALE_ZONE,
                        env=envs[label],
                    ) as srv:
                        srv.metrics_port = mport
                        set_nice(srv.proc.pid, nice)
                        big, small_rss, start = facts.get(label, (0.0, 0.0, 0.0))
                        loaded_rss = rss_mib(srv.proc.pid)
                        if small:
                            small_rss = small_rss or rss_mib(srv.proc.pid)
                        else:
                            if not big:
                                big, start = rss_mib(srv.proc.pid), time.perf_counter() - t0
                            # QPS rounds in every repetition, pooled per binary: the binaries
                            # take turns going first across repetitions, so neither is always
                            # measured on the first server of the run (a bias seen at load).
                            share = qps_share(args.rounds, args.scale_repeat, rep)
                            if share:
                                p = paired_rounds(
                                    srv, fsrv, qfile, args.seconds, share, start=qps_done[label]
                                )
                                qps_done[label] += share
                                pooled = qps_pool.setdefault(label, Paired([], []))
                                pooled.a.extend(p.a)
                                pooled.b.extend(p.b)
                        facts[label] = (big, small_rss, start)
                        for st in streams:
                            if st.small != small:
                                continue
                            run = runs[(label, st.label)]
                            # The first stream came right after the QPS rounds, whose garbage
                            # (more of it from the faster server) was collected in it.
                            wait_quiet(srv)
                            run.loads.append(os.getloadavg()[0])
                            run.add(scale_stream(srv, rport, rpid, args, st))
                        if not small:
                            rss_log.setdefault(label, []).append(
                                (loaded_rss, rss_mib(srv.proc.pid))
                            )
    qps_rows.extend(qps_pool.items())
    print_scale(args, records, qps_rows, file_rss, facts, rss_log, runs)
    set_nice(rpid, 0)
    r.delete(SCALE_ZONE, CONTROL_ZONE)
    r1.delete(CONTROL_ZONE)


def qps_share(rounds: int, repeats: int, rep: int) -> int:
    """How many of `rounds` QPS rounds repetition `rep` of `repeats` takes: spread as evenly
    as they go, earlier repetitions taking the remainder."""
    return rounds // repeats + (1 if rep < rounds % repeats else 0)


def set_nice(pid: int, nice: int) -> None:
    """Give a process, and the autogroup of its session (it has a session of its own), the
    nice value: with autogroup scheduling a process's own nice only counts within its
    group."""
    os.setpriority(os.PRIO_PROCESS, pid, nice)
    group = Path(f"/proc/{pid}/autogroup")
    if group.exists():
        group.write_text(str(nice))


def print_scale(
    args: argparse.Namespace,
    records: int,
    qps_rows: list[tuple[str, Paired]],
    file_rss: float,
    facts: dict[str, tuple[float, float, float]],
    rss_log: dict[str, list[tuple[float, float]]],
    runs: dict[tuple[str, str], ScaleRun],
) -> None:
    print(f"\nScale: one zone of {args.scale_owners} names ({records} records), {SCALE_ZONE}")
    print(
        f"Queries per second against the file plugin on that zone: dnsperf -c 4, {args.rounds} "
        f"alternating rounds of {args.seconds}s per binary; both server blocks have bind and "
        "prometheus"
    )
    print_qps_table(qps_rows)
    print(f"memory: file plugin RSS {file_rss:.0f} MiB")
    for label, (rss, small_rss, load_s) in facts.items():
        print(
            f"  {label}: coredns RSS {rss:.0f} MiB after load "
            f"({rss * 1024 * 1024 / records:.0f} bytes per record, all included; a server of "
            f"one {CONTROL_OWNERS}-name zone: {small_rss:.0f} MiB); start to first answer "
            f"{load_s:.2f} s"
        )
        each = ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in rss_log.get(label, []))
        print(f"    RSS per repetition, after load -> after its QPS rounds and streams: {each} MiB")
    print(
        f"\nChange -> visible while {args.scale_rate:.0f} agent changes/s stream into the zone "
        f"(probe every 50 ms; {args.scale_repeat} streams of {args.scale_seconds:g} s each, "
        "samples pooled), ms: write sent -> kernel receipt of the first new answer (upper "
        "bound), and -> the last query answered with the old data (lower bound); split at "
        "redis's PUBLISH of the probe's message (kernel receipt on a subscriber of the "
        "benchmark's): redis (write sent -> published) and the rest (published -> visible, "
        "upper bound: the plugin's subscriber, the plugin, the answer)"
    )
    print(
        f"{'server, writer':40} {'p50':>7} {'p99':>7} {'max':>7} {'p99 low':>7} {'t/o':>4}"
        f" {'redis50':>7} {'redis99':>7} {'rest50':>7} {'rest99':>7}"
        "  p99 per stream; load at start"
    )
    for run in runs.values():
        s = run.stats
        print(
            f"{run.label:40} {fmt_ms(percentile(s.upper_ms, 50), 7)} "
            f"{fmt_ms(percentile(s.upper_ms, 99), 7)} "
            f"{fmt_ms(max(s.upper_ms) if s.upper_ms else None, 7)} "
            f"{fmt_ms(percentile(s.lower_ms, 99), 7)} {s.timeouts:>4}"
            f" {fmt_ms(percentile(s.published_ms, 50), 7)}"
            f" {fmt_ms(percentile(s.published_ms, 99), 7)}"
            f" {fmt_ms(percentile(s.after_publish_ms, 50), 7)}"
            f" {fmt_ms(percentile(s.after_publish_ms, 99), 7)}"
            f"  {' '.join(f'{p:.0f}' for p in run.p99s)}; {' '.join(f'{x:.1f}' for x in run.loads)}"
        )
    print(
        "\nWhere the time goes. Inside the plugin (its change_seconds histogram, bucket bounds, "
        "ms): message read -> served (total), -> loader takes it (wait), HMGET (read), "
        "build, serial script (serial; after the change is served, in this plugin). The "
        "prober's own delay (ms): reply received by the kernel -> read by the prober, and "
        "oversleep of its 1 ms pauses. CPU: ms of coredns "
        "CPU per change (stream and probe changes); whole reads of a zone or all zones meanwhile; "
        "CPU seconds per process."
    )
    print(
        f"{'server, writer':40} {'changes':>7} {'tot p50':>7} {'tot p99':>7} {'wait99':>7} "
        f"{'read99':>7} {'build99':>7} {'ser99':>7} {'rd p99':>6} {'rd max':>6} {'sl p99':>6} "
        f"{'sl max':>6} {'cpu/ch':>6} {'whole':>5} {'wall s':>6} {'coredns':>7} {'redis':>6} "
        f"{'bench':>6}"
    )
    for run in runs.values():
        s, h = run.stats, run.hist
        print(
            f"{run.label:40} {run.written + run.probes:7d} "
            + " ".join(
                f"{histogram_pct(h, st, p):>7}"
                for st, p in (
                    ("total", 50),
                    ("total", 99),
                    ("wait", 99),
                    ("read", 99),
                    ("build", 99),
                    ("serial", 99),
                )
            )
            + f" {fmt_ms(percentile(s.read_delay_ms, 99), 6)}"
            f" {fmt_ms(max(s.read_delay_ms) if s.read_delay_ms else None, 6)}"
            f" {fmt_ms(percentile(s.oversleep_ms, 99), 6)}"
            f" {fmt_ms(max(s.oversleep_ms) if s.oversleep_ms else None, 6)}"
            f" {run.cpu_ms_per_change():6.3f} {run.whole_reads:5d} {run.wall_s:6.1f}"
            f" {run.cpu['coredns']:7.2f}"
            f" {run.cpu['redis-server']:6.2f} {run.cpu['bench (this)']:6.2f}"
        )
    print("\nGC of each server during its streams (GODEBUG=gctrace=1)")
    gcs: dict[str, GcStats] = {}
    for (label, st), run in runs.items():
        size = CONTROL_OWNERS if "own server" in st else args.scale_owners
        key = f"{label}, {size:,}-name server"
        g = gcs.setdefault(key, GcStats())
        g.cycles += run.gc.cycles
        g.pause_ms += run.gc.pause_ms
        g.mark_ms += run.gc.mark_ms
        g.assist_ms += run.gc.assist_ms
        g.live_mb, g.goal_mb = max(g.live_mb, run.gc.live_mb), max(g.goal_mb, run.gc.goal_mb)
    for key, g in gcs.items():
        print(
            f"  {key}: {g.cycles} cycles, heap live <= {g.live_mb} MB (goal {g.goal_mb} MB), "
            f"stop-the-world p99/max {fmt_ms(percentile(g.pause_ms, 99), 0).strip()}/"
            f"{fmt_ms(max(g.pause_ms) if g.pause_ms else None, 0).strip()} ms, concurrent mark "
            f"max {fmt_ms(max(g.mark_ms) if g.mark_ms else None, 0).strip()} ms, assist CPU "
            f"{g.assist_ms:.1f} ms in all"
        )
    print(
        f"(names fields: PUBLISH `ZONE FIELD`, the agent's format; agent code: the probe is a "
        "new name added by the agent's DNSStore.add_subdomain, its reads and checks included; "
        f"zone only: PUBLISH `ZONE`, the agent before issue 17; {CONTROL_OWNERS} names: the "
        "agent's format into a 100-name zone, on the large zone's server or on a server of "
        "its own; nice=N: coredns and redis-server at that nice value; prober scheduling: "
        f"{args.prober_priority} (agent code: normal); "
        f"{os.cpu_count()} CPUs; {load_note()} at the end)"
    )


def fmt_ms(v: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.2f}"


def qps_section(servers: dict[str, Server], qfile: Path, args: argparse.Namespace) -> None:
    """dnsperf against gatewaydns and file in alternating rounds."""
    print(
        f"zone {ZONE}: {args.owners} owners; dnsperf -c 4, "
        f"{args.rounds} alternating rounds of {args.seconds}s; {load_note()}"
    )
    p = paired_rounds(servers["gatewaydns"], servers["file"], qfile, args.seconds, args.rounds)
    print_qps_table([("gatewaydns", p)])


def print_qps_table(rows: list[tuple[str, Paired]]) -> None:
    """QPS (wall clock) and queries per CPU-second of the server, each against the file
    plugin measured in the same alternating rounds; medians."""
    print(
        f"{'server':20} {'QPS':>8} {'file QPS':>9} {'ratio':>6}   {'q/CPU-s':>8} "
        f"{'file q/CPU-s':>12} {'ratio':>6}  QPS per round (server / file)"
    )
    for label, p in rows:
        (g, f), (gc, fc) = p.median_qps(), p.median_per_cpu_s()
        per_round = ", ".join(f"{x.qps:.0f}/{y.qps:.0f}" for x, y in zip(p.a, p.b, strict=True))
        per_cpu = ", ".join(
            f"{x.per_cpu_s:.0f}/{y.per_cpu_s:.0f}" for x, y in zip(p.a, p.b, strict=True)
        )
        print(
            f"{label:20} {g:8.0f} {f:9.0f} {p.qps_ratio():5.2f}x   {gc:8.0f} {fc:12.0f}"
            f" {p.cpu_ratio():5.2f}x  {per_round}"
        )
        print(f"{'':20} q/CPU-s per round (server / file): {per_cpu}")
    print(
        "(ratios: medians of per-round ratios; q/CPU-s: queries answered per CPU-second of the "
        "DNS process, user+system from /proc)"
    )


def latency_section(
    servers: dict[str, Server],
    writers: dict[str, RedisWriter | ZoneFileWriter],
    r: redis.Redis,
    args: argparse.Namespace,
) -> None:
    """Change-to-visible latency of isolated changes, per server and scenario."""
    print("\nChange-to-visible latency (write -> DNS answers the new data), ms")
    print(
        f"{'scenario':20} {'server':22} {'p50':>8} {'p99':>8} {'max':>8} "
        f"{'timeouts':>9} {'p50 ratio':>10}"
    )
    by_kind: dict[str, RedisWriter | ZoneFileWriter] = {
        "agent": AgentWriter(r),
        "plain": RedisWriter(r),
        "file": writers["file+reload"],
    }
    probes = [
        Probe("change", SMALL_ZONE, SMALL_OWNERS),
        Probe("add", SMALL_ZONE, SMALL_OWNERS),
        Probe("change", ZONE, args.owners),
    ]
    for probe in probes:
        base: float | None = None
        for label, server, kind in LATENCY_ROWS:
            if server not in servers:
                continue
            cached = server in SLOW_SERVERS
            lat = change_latency(
                by_kind[kind],
                servers[server].port,
                probe,
                args.slow_samples if cached else args.samples,
                args.slow_deadline if cached else 5.0,
                quiet=args.quiet_ms / 1000,
            )
            p50 = lat.pct(50)
            if label == "gatewaydns":
                base = p50
            ratio = "-" if p50 is None or not base else f"{p50 / base:.2f}x"
            n = len(lat.samples_ms) + lat.timeouts
            peak = max(lat.samples_ms) if lat.samples_ms else None
            print(
                f"{probe.label:20} {label:22} {fmt_ms(p50)} {fmt_ms(lat.pct(99))} "
                f"{fmt_ms(peak)} {lat.timeouts:>4}/{n:<4} {ratio:>10}"
            )
    print(
        f"\n(timeouts: not visible within {args.slow_deadline}s;"
        " with `cache` a change waits for the cached TTL, up to 300 s here;"
        " file+reload: the zone file is rewritten, file rereads it every 1 s;"
        " gatewaydns: the agent's transaction, naming the field; plain HSET: a writer that"
        " names nothing (keyspace event, whole read of the zone);"
        " p50 ratio is against gatewaydns)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("TFGW_BIN", "/var/cache/tfgateway/bin"))
    ap.add_argument("--owners", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument(
        "--samples", type=int, default=100, help="latency samples per server without cache"
    )
    ap.add_argument("--slow-samples", type=int, default=10)
    ap.add_argument(
        "--slow-deadline",
        type=float,
        default=3.0,
        help="seconds before a sample of a server without push counts as a timeout",
    )
    ap.add_argument(
        "--quiet-ms",
        type=int,
        default=60,
        help="pause before each latency sample, so each is an isolated change (longer than"
        " gatewaydns's pause between two reloads of a zone)",
    )
    ap.add_argument(
        "--sections",
        default="qps,latency,bulk,scale",
        help="comma-separated: qps (dnsperf), latency (change-to-visible), bulk (many writes"
        " into one zone, reload pacing off vs on), scale (one zone of --scale-owners names)",
    )
    ap.add_argument("--bulk-names", type=int, default=2500)
    ap.add_argument(
        "--bulk-batch",
        type=int,
        default=40,
        help="agent transactions per burst (4 commands each: MULTI, HSET, PUBLISH, EXEC)",
    )
    ap.add_argument("--bulk-every", type=float, default=0.05, help="seconds between bursts")
    ap.add_argument(
        "--bulk-steady-ms",
        type=int,
        default=5,
        help="ms between single agent transactions in the steady scenario",
    )
    ap.add_argument(
        "--coalesce", default="25ms", help="gatewaydns coalesce setting of the bulk 'on' server"
    )
    ap.add_argument("--scale-owners", type=int, default=50000, help="names in the scale zone")
    ap.add_argument(
        "--scale-rate", type=float, default=200, help="agent changes per second while measuring"
    )
    ap.add_argument("--scale-seconds", type=float, default=10, help="length of each stream")
    ap.add_argument(
        "--prober-priority",
        choices=("fifo", "normal"),
        default="fifo" if os.geteuid() == 0 else "normal",
        help="scheduling of the scale section's prober while it measures: fifo (SCHED_FIFO, "
        "needs root; the default as root) so that the machine's load does not delay its "
        "writes and queries, or normal",
    )
    ap.add_argument(
        "--scale-gogc",
        action="append",
        default=[],
        metavar="PERCENT",
        help="also measure this plugin with GOGC=PERCENT (repeatable; 'off' allowed) side by side",
    )
    ap.add_argument(
        "--scale-nice",
        action="append",
        default=[],
        metavar="N",
        help="also measure this plugin with coredns and redis-server at nice N, and their "
        "sessions' autogroups (repeatable; below 0 needs root) side by side",
    )
    ap.add_argument(
        "--scale-plain-file",
        action="store_true",
        help="also measure the file server without prometheus against it (what the metrics "
        "plugin costs per query; its row in the QPS table)",
    )
    ap.add_argument(
        "--scale-no-zone-only",
        action="store_true",
        help="leave out the scale streams whose writer names the zone only (whole reads)",
    )
    ap.add_argument(
        "--scale-repeat",
        type=int,
        default=3,
        help="streams per server and writer (binaries alternate going first); samples pooled",
    )
    ap.add_argument(
        "--baseline",
        help="another coredns-tfgw binary (e.g. built from main by run.sh --baseline REV) to"
        " measure side by side in the scale section",
    )
    args = ap.parse_args()
    known = {"qps", "latency", "bulk", "scale"}
    sections = set(args.sections.split(","))
    if not sections <= known:
        ap.error(f"unknown sections {sorted(sections - known)}")

    tfgw = Path(args.bin) / "coredns-tfgw"
    if not tfgw.exists():
        print(f"missing {tfgw}: run scripts/build-go.sh", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="tfgw-dnsbench-") as tmp:
        work = Path(tmp)
        rport = free_port()
        rproc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(rport),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # as for CoreDNS: not in the benchmark's autogroup
        )
        try:
            r = redis.Redis(host=LOOPBACK, port=rport, decode_responses=True)
            wait_for(lambda: _ping(r), 10, "redis")
            r.hset(ZONE, mapping=zone_fields(args.owners))
            r.hset(SMALL_ZONE, mapping=zone_fields(SMALL_OWNERS))
            (work / "db.bench").write_text(zone_file(ZONE, args.owners))
            qfile = work / "queries.txt"
            query_file(args.owners, qfile)

            gw_block = (
                f"gatewaydns {{\n    address {LOOPBACK}:{rport}\n    nameservers ns1.{ZONE}\n"
                f"    hostmaster hostmaster.{ZONE}\n  }}"
            )
            corefiles = {
                "gatewaydns": (tfgw, f".:PORT {{\n  bind {LOOPBACK}\n  {gw_block}\n}}\n"),
                "file": (
                    tfgw,
                    f".:PORT {{\n  bind {LOOPBACK}\n  file {work / 'db.bench'} {ZONE}\n}}\n",
                ),
                "gatewaydns+cache": (
                    tfgw,
                    f".:PORT {{\n  bind {LOOPBACK}\n  cache\n  {gw_block}\n}}\n",
                ),
            }
            reload_paths = {SMALL_ZONE: work / "db.reload.small", ZONE: work / "db.reload.bench"}
            file_writer = ZoneFileWriter(
                reload_paths, {SMALL_ZONE: SMALL_OWNERS, ZONE: args.owners}
            )
            corefiles["file+reload"] = (
                tfgw,
                f".:PORT {{\n  bind {LOOPBACK}\n"
                + "".join(
                    f"  file {p} {z} {{\n    reload 1s\n  }}\n" for z, p in reload_paths.items()
                )
                + "}\n",
            )
            writers: dict[str, RedisWriter | ZoneFileWriter] = {"file+reload": file_writer}

            if sections & {"qps", "latency"}:
                servers: dict[str, Server] = {}
                with _all(corefiles, work, servers):
                    # Sanity: both sides serve the same data before anything is timed.
                    for label in ("gatewaydns", "file"):
                        got = answer_ips(query(servers[label].port, "h1." + ZONE))
                        if got != {"10.0.0.1"}:
                            raise RuntimeError(f"{label} answers {got} for h1")

                    if "qps" in sections:
                        qps_section(servers, qfile, args)
                    if "latency" in sections:
                        latency_section(servers, writers, r, args)
            if "bulk" in sections:
                bulk_section(args, tfgw, rport, work)
            if "scale" in sections:
                binaries = {"after": tfgw}
                if args.baseline:
                    binaries["before"] = Path(args.baseline)
                for gogc in args.scale_gogc:
                    binaries[f"after GOGC={gogc}"] = tfgw
                for nice in args.scale_nice:
                    binaries[f"after nice={nice}"] = tfgw  # coredns and redis-server
                scale_section(args, binaries, rport, rproc.pid, work)
        finally:
            rproc.terminate()
            rproc.wait(5)
    return 0


def _ping(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.exceptions.ConnectionError:
        return False


@contextmanager
def _all(
    corefiles: dict[str, tuple[Path, str]], work: Path, out: dict[str, Server]
) -> Iterator[None]:
    """Start every server; stop them all on exit."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        for label, (binary, conf) in corefiles.items():
            out[label] = stack.enter_context(coredns(str(binary), label, conf, work))
        yield


if __name__ == "__main__":
    sys.exit(main())
