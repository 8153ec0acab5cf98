"""Abuse of the public ports (issue 8 point 5), against the real tfrouter, tftunnel and
coredns-tfgw on loopback, fed by a real redis-server:

- 1,000 connections that never finish their HTTP header and 500 that never finish their TLS
  ClientHello: well-behaved users keep being served meanwhile, the router drops the idle ones at
  its deadline;
- a connection flood past the router's file-descriptor limit (RLIMIT_NOFILE 128): no exit, and
  service comes back as soon as the flood ends;
- 50 tftunnel clients registering, dying (kill -9) and reconnecting concurrently;
- a DNS query flood (dnsperf) while a well-behaved resolver keeps getting right answers.

Memory (RSS from /proc) is printed before, during and after (numbers for the lead's note) and
bounded generously, so a leak fails.
"""

from __future__ import annotations

import contextlib
import http.server
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest
import redis

from tests.support.processes import binary, free_dns_port, free_port, port_open, stop, wait_until
from tests.support.redis_server import RedisServer
from tfgateway.primitives.tcprouter import encode_service, proxy_key

pytestmark = pytest.mark.integration

MANAGED = "gw.example.com"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


class Backend(http.server.ThreadingHTTPServer):
    """A user's site behind a tunnel: answers with the Host it was asked for."""

    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"site host={self.headers.get('Host', '')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Router:
    workdir: Path
    redis_port: int
    nofile: int
    http_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    clients_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.workdir / f"router-{self.http_port}.toml"
        config.write_text(
            "[server]\n"
            'addr = "127.0.0.1"\n'
            f"port = {self.tls_port}\nhttpport = {self.http_port}\n"
            f"clientsport = {self.clients_port}\n"
            "[server.dbbackend]\n"
            f'type = "redis"\naddr = "127.0.0.1"\nport = {self.redis_port}\n'
        )
        limit = self.nofile

        def low_fd_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        log = (self.workdir / f"router-{self.http_port}.log").open("ab")
        self.proc = subprocess.Popen(
            [binary("tfrouter"), "--config", str(config)],
            stdout=log, stderr=log, preexec_fn=low_fd_limit,
        )  # fmt: skip
        wait_until(lambda: port_open("127.0.0.1", self.http_port), what="tfrouter")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return (self.workdir / f"router-{self.http_port}.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def get(port: int, host: str, timeout: float = 3.0) -> str:
    """GET / with a Host header; the body, or '' if the router closed without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def served(port: int, host: str) -> bool:
    try:
        return get(port, host) == f"site host={host}\n"
    except OSError:
        return False


@dataclass
class Tunnels:
    """tftunnel clients (trc-compatible), one per user secret."""

    router: Router
    backend_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, secret: str) -> None:
        self.procs[secret] = subprocess.Popen(
            [binary("tftunnel"), "--secret", secret,
             "--remote", f"127.0.0.1:{self.router.clients_port}",
             "--local", f"127.0.0.1:{self.backend_port}", "--backoff", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill9(self, secret: str) -> None:
        proc = self.procs.pop(secret)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)

    def close(self) -> None:
        for proc in self.procs.values():
            stop(proc)
        self.procs.clear()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int, Path]]:
    """redis (its own, the module keeps its routes) and a backend site."""
    workdir = tmp_path_factory.mktemp("ports")
    server = RedisServer(workdir / "redis")
    server.start()
    backend = Backend(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, backend.server_address[1], workdir
    finally:
        backend.shutdown()
        server.stop()


def publish_tunnel_route(r: redis.Redis, domain: str, secret: str, tid: int) -> None:
    r.set(proxy_key(domain), encode_service(domain, secret=secret, user=str(tid)))


@contextlib.contextmanager
def router_with_users(
    stack: tuple[RedisServer, int, Path], nofile: int, users: int
) -> Iterator[tuple[Router, Tunnels, list[str]]]:
    server, backend_port, workdir = stack
    r = server.client()
    names = []
    for i in range(users):
        name = f"u{i}-{nofile}.{MANAGED}"
        publish_tunnel_route(r, name, f"{100 + i}:secret-{nofile}-{i}", 100 + i)
        names.append(name)
    router = Router(workdir, server.port, nofile)
    router.start()
    tunnels = Tunnels(router, backend_port)
    try:
        for i in range(users):
            tunnels.start(f"{100 + i}:secret-{nofile}-{i}")
        wait_until(lambda: all(served(router.http_port, n) for n in names), timeout=30,
                   interval=0.1, what="every user through its tunnel")  # fmt: skip
        yield router, tunnels, names
    finally:
        tunnels.close()
        router.stop()


def raise_own_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= want, "the test needs more fds"


def open_idle(port: int, n: int, first_bytes: bytes, sources: list[str]) -> list[socket.socket]:
    """n connections that send first_bytes and stop, spread over the source addresses (the
    router keeps at most 256 unfinished per source)."""
    socks = []
    for i in range(n):
        s = socket.socket()
        s.settimeout(5)
        s.bind((sources[i % len(sources)], 0))
        s.connect(("127.0.0.1", port))
        s.sendall(first_bytes)
        socks.append(s)
    return socks


def check_users(port: int, names: list[str], rounds: int) -> list[float]:
    latencies = []
    for k in range(rounds):
        name = names[k % len(names)]
        t0 = time.monotonic()
        assert served(port, name), f"{name} not served"
        latencies.append(time.monotonic() - t0)
    return latencies


def test_slow_headers_and_hellos_do_not_starve_other_users(
    stack: tuple[RedisServer, int, Path],
) -> None:
    raise_own_fd_limit(4000)
    with router_with_users(stack, nofile=8192, users=3) as (router, _tunnels, names):
        rss_before, fds_before = rss_kib(router.pid), fds(router.pid)
        t0 = time.monotonic()
        sources = [f"127.0.1.{i}" for i in range(1, 9)]  # 1,500 over 8: within the shares
        partial_http = open_idle(
            router.http_port, 1000, b"GET / HTTP/1.1\r\nHost: u0.gw.exa", sources
        )
        # a TLS record header announcing a 512-byte ClientHello, then only its first bytes
        partial_tls = open_idle(router.tls_port, 500, b"\x16\x03\x01\x02\x00\x01\x00\x01", sources)
        try:
            latencies = check_users(router.http_port, names, 30)
            rss_during, fds_during = rss_kib(router.pid), fds(router.pid)
            assert router.alive()
            assert fds_during >= fds_before + 1400, "the idle connections are not held"

            # The router drops them at its header deadline (10 s), not later.
            def dropped(s: socket.socket) -> bool:
                s.settimeout(0.5)
                try:
                    return s.recv(1) == b""
                except TimeoutError:
                    return False
                except OSError:
                    return True

            wait_until(lambda: dropped(partial_http[-1]) and dropped(partial_tls[-1]),
                       timeout=20, interval=0.2, what="idle connections dropped")  # fmt: skip
            dropped_after = time.monotonic() - t0
        finally:
            for s in partial_http + partial_tls:
                s.close()
        wait_until(lambda: fds(router.pid) <= fds_before + 20, timeout=20,
                   what="router fds back")  # fmt: skip
        check_users(router.http_port, names, 5)
        rss_after = rss_kib(router.pid)
        print(
            f"\nslowloris x1500: user requests during p50={sorted(latencies)[15] * 1000:.1f} ms "
            f"max={max(latencies) * 1000:.1f} ms; idle dropped after {dropped_after:.1f} s; "
            f"router RSS KiB before={rss_before} during={rss_during} after={rss_after}; "
            f"fds before={fds_before} during={fds_during}"
        )
        assert 9 <= dropped_after <= 20
        assert rss_during < rss_before * 4 + 64 * 1024
        assert rss_after < rss_before * 3 + 32 * 1024
        assert router.alive()


def test_connection_flood_past_the_fd_limit(stack: tuple[RedisServer, int, Path]) -> None:
    raise_own_fd_limit(4000)
    with router_with_users(stack, nofile=128, users=2) as (router, _tunnels, names):
        rss_before = rss_kib(router.pid)
        flood: list[socket.socket] = []
        try:
            for _ in range(600):  # the kernel queues what the router cannot accept
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", router.http_port))
                flood.append(s)
            wait_until(lambda: fds(router.pid) >= 120, timeout=10, what="fd limit reached")
            wait_until(lambda: router.log().count("too many open files") >= 5, timeout=10,
                       what="accept loop hitting EMFILE")  # fmt: skip
            assert router.alive(), "tfrouter exited at the fd limit"
            rss_during = rss_kib(router.pid)
        finally:
            for s in flood:
                s.close()
        t0 = time.monotonic()
        wait_until(lambda: served(router.http_port, names[0]), timeout=20, interval=0.1,
                   what="service back after the flood")  # fmt: skip
        back_after = time.monotonic() - t0
        check_users(router.http_port, names, 10)
        rss_after = rss_kib(router.pid)
        print(
            f"\nflood x600 at RLIMIT_NOFILE=128: served again {back_after:.2f} s after the "
            f"flood; RSS KiB before={rss_before} during={rss_during} after={rss_after}"
        )
        assert router.alive()
        assert rss_after < rss_before * 3 + 32 * 1024


def test_fifty_tunnel_clients_register_and_reconnect(
    stack: tuple[RedisServer, int, Path],
) -> None:
    with router_with_users(stack, nofile=4096, users=50) as (router, tunnels, names):
        rss_before = rss_kib(router.pid)
        secrets = list(tunnels.procs)
        # Half die at once (kill -9) and come back; the others keep serving meanwhile.
        for secret in secrets[::2]:
            tunnels.kill9(secret)
        for secret in secrets[::2]:
            tunnels.start(secret)
        # Ten register twice (a second client with the same secret replaces the first).
        for secret in secrets[1:20:2]:
            tunnels.kill9(secret)
            tunnels.start(secret)
        check_users(router.http_port, names[1::2], 25)

        def all_served() -> bool:
            assert router.alive()
            return all(served(router.http_port, n) for n in names)

        wait_until(all_served, timeout=40, interval=0.3, what="every tunnel after reconnects")
        rss_after = rss_kib(router.pid)
        print(f"\n50 tunnels, 35 reconnects: router RSS KiB before={rss_before} after={rss_after}")
        assert rss_after < rss_before * 3 + 64 * 1024


@contextlib.contextmanager
def coredns_on(server: RedisServer, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """coredns-tfgw with the gatewaydns plugin on `server`, on a free loopback UDP port:
    (process, port); stopped afterwards."""
    port = free_dns_port()
    corefile = workdir / "Corefile"
    corefile.write_text(
        f".:{port} {{\n    bind 127.0.0.1\n    errors\n    gatewaydns {{\n"
        f"        address 127.0.0.1:{server.port}\n        nameservers ns1.{MANAGED}.\n"
        "    }\n}\n"
    )
    log = (workdir / "coredns.log").open("ab")
    proc = subprocess.Popen([binary("coredns-tfgw"), "-conf", str(corefile)], stdout=log,
                            stderr=log)  # fmt: skip
    try:
        yield proc, port
    finally:
        stop(proc)


def dnsperf_queries(path: Path) -> Path:
    """200 names that exist, 200 that do not, 50 long ones, 50 outside every zone (REFUSED)."""
    lines = [f"h{i}.{MANAGED} A" for i in range(200)]
    lines += [f"nx{i}.{MANAGED} AAAA" for i in range(200)]
    lines += [f"{'x' * 60}{i}.{MANAGED} TXT" for i in range(50)]
    lines += [f"other{i}.example. A" for i in range(50)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dns_query_flood_keeps_answering_right(
    stack: tuple[RedisServer, int, Path],
) -> None:
    server, _backend, workdir = stack
    r = server.client()
    zone = f"{MANAGED}."
    r.hset(zone, "app", '{"a":[{"ip":"185.69.166.1","ttl":300}]}')
    for i in range(200):
        r.hset(zone, f"h{i}", f'{{"a":[{{"ip":"185.69.167.{i % 250 + 1}"}}]}}')
    with coredns_on(server, workdir) as (proc, port):

        def right() -> bool:
            """A well-behaved resolver's question gets the right answer within 1 s."""
            q = dns.message.make_query(f"app.{MANAGED}", dns.rdatatype.A)
            try:
                answer = dns.query.udp(q, "127.0.0.1", port=port, timeout=1.0)
            except (OSError, dns.exception.Timeout):
                return False
            return [rd.to_text() for rs in answer.answer for rd in rs] == ["185.69.166.1"]

        wait_until(right, timeout=20, what="coredns-tfgw answering")
        rss_before = rss_kib(proc.pid)
        perf = subprocess.Popen(
            ["dnsperf", "-s", "127.0.0.1", "-p", str(port),
             "-d", str(dnsperf_queries(workdir / "queries.txt")), "-l", "6",
             "-c", "20", "-q", "500", "-Q", "40000"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        asked = good = 0
        flood_until = time.monotonic() + 5.5
        while time.monotonic() < flood_until:
            asked += 1
            good += right()
            time.sleep(0.05)
        out = perf.communicate(timeout=30)[0].decode()
        assert perf.returncode == 0, out
        rss_after = rss_kib(proc.pid)
        qps = next((ln.split()[-1] for ln in out.splitlines() if "Queries per second" in ln), "?")
        lost = next((ln.strip() for ln in out.splitlines() if "Queries lost" in ln), "?")
        print(
            f"\nDNS flood: dnsperf {qps} qps ({lost}); well-behaved resolver {good}/{asked} right;"
            f" coredns-tfgw RSS KiB before={rss_before} after={rss_after}"
        )
        assert proc.poll() is None, "coredns-tfgw exited"
        assert good >= asked * 0.9, (good, asked)
        assert rss_after < rss_before * 4 + 64 * 1024
