"""The whole gateway in network namespaces: one object that starts it and removes every trace.

Used by the end-to-end tests, the local run (`scripts/demo.sh`), the end-to-end benchmarks and
the fault tests. Topology (all addresses exist only inside the namespaces; the gateway does not
forward between its links, so the others reach nothing but the gateway):

    client 10.71.1.2 ──── 10.71.1.1 ┐
                                    gw  (redis 127.0.0.1:6379 with persistence, CoreDNS :53,
    backend 10.71.2.2 ─── 10.71.2.1 ┤    router :80 :443 :18000, agent)
                                    │
    natc 10.71.3.2 ────── 10.71.3.1 ┘   (accepts no incoming connection: a NATed home running
                                         the tunnel client `tftunnel`, trc-compatible)

The client namespace also plays the Internet's DNS (`WorldDNS` on 10.71.1.2:53): the agent looks
proofs of control up there (`--proof-resolver`), and tests publish what name owners would.

The development explorer runs in the host namespace on loopback, where tests drive its admin
API, and also listens on the same address and port inside `gw` (`--netns`: a second listening
socket opened in that namespace), so the agent reaches it on its own loopback with no relay.

redis requires a password, as on the appliance: a random one per run in
`<workdir>/credentials/redis-password`, which the agent (`--redis-password-file`), CoreDNS
(`password_file`) and the router (`passwordfile`) read as they read their systemd credential
there. With `rendered` set, redis, CoreDNS, the router and the agent run from the NixOS
module's kept renderings (tests/nixos/rendered/, tests/support/rendered.py) instead of the
harness's own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import trustme

from tests.support import pebble
from tests.support.netns import Link, Namespace, NamespaceSet
from tests.support.processes import agent_program, binary, free_port, port_open, wait_until
from tests.support.rendered import Rendered
from tests.support.world_dns import WorldDNS
from tfgateway.node.identity import Identity, load_or_create
from tfgateway_devexplorer.admin_client import AdminClient
from tfgateway_devexplorer.user_crypto import UserKeys, encrypt_secret

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

GW_CLIENT_ADDR = "10.71.1.1"  # the gateway's public address, as clients see it
CLIENT_ADDR = "10.71.1.2"
GW_BACKEND_ADDR = "10.71.2.1"
BACKEND_ADDR = "10.71.2.2"
GW_NATC_ADDR = "10.71.3.1"
NATC_ADDR = "10.71.3.2"
GW_ADDRESSES = (GW_CLIENT_ADDR, GW_BACKEND_ADDR, GW_NATC_ADDR)

REDIS_PORT = 6379
DNS_PORT = 53
HTTP_PORT = 80
TLS_PORT = 443
TUNNEL_PORT = 18000
ROUTER_METRICS_PORT = 9111  # tfrouter's metrics on gw's loopback, as in the appliance
# The public backend's sites, and the NATed client's local site (reached only by tunnel).
BACKEND_HTTP_PORT = 8080
BACKEND_TLS_PORT = 8443
NATC_HTTP_PORT = 9080
NATC_TLS_PORT = 9443

MANAGED_DOMAIN = "gw.example"
NAMESERVER = "ns1.gw.example"


T = TypeVar("T")
RESULT_STATES = {0: "error", 1: "ok", 2: "deleted"}


class GatewayError(RuntimeError):
    """A component did not start or misbehaved; the message includes its log tail."""


@dataclass
class Process:
    """A program the harness started; its output goes to `log`."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)


@dataclass(frozen=True)
class User:
    """A grid user of the development explorer, with the key only the user holds."""

    id: int
    keys: UserKeys


@dataclass(frozen=True)
class Result:
    """What the gateway reported for a workload: state `ok`, `error` or `deleted`."""

    state: str
    message: str
    data_json: str = "null"


class AdminLoop:
    """One event loop in a thread for the async admin client, so sync code can call it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[object, object, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class TlsReply:
    reply: HttpReply
    peer_cert_der: bytes


@dataclass
class Gateway:
    """Start with `start()` (or `with Gateway(...)`), stop with `close()`; both idempotent.

    `dns_program` (CoreDNS with the `gatewaydns` plugin) and `router_program` (trs-compatible
    `--config router.toml`) name the data-plane binaries. The agent is started by `start()`
    unless `with_agent` is false (e.g. to test the data plane on its own).
    """

    workdir: Path
    dns_program: str = "coredns-tfgw"
    router_program: str = "tfrouter"
    with_agent: bool = True
    domains: Sequence[str] = (MANAGED_DOMAIN,)
    nameservers: Sequence[str] = (NAMESERVER,)
    poll_interval: float | None = 0.2  # None: the agent's own default
    agent_extra_args: Sequence[str] = ()
    dns_query_log: bool = True
    """CoreDNS's `log` (a line per query, handy in test logs); benchmarks turn it off, as the
    appliance's Corefile has it off: it cost more CPU than serving the queries."""
    acme: bool = False
    """Run Pebble (tests.support.pebble) in the client namespace and give the router a [tls]
    table that obtains certificates from it (with `router_tls` on top)."""
    router_tls: dict[str, object] = field(default_factory=dict)
    """Keys of the router's [tls] table; change them and `restart_router()` to apply."""
    log: Callable[[str], None] = lambda _msg: None
    rendered: Rendered | None = None
    """Run redis, CoreDNS, the router and the agent from the module's kept renderings."""
    explorer: bool = True
    """Run the development explorer and give the agent `--explorer`; False: standalone."""
    workloads: Path | None = None
    """The operator's workloads file (`--workloads`, docs/workloads.md), if any."""
    netns: NamespaceSet = field(init=False)
    world: WorldDNS = field(init=False)
    procs: dict[str, Process] = field(default_factory=dict, init=False)
    explorer_port: int = field(default=0, init=False)
    identity: Identity = field(init=False)
    acme_server: pebble.Pebble = field(init=False)
    _admin: AdminClient | None = field(default=None, init=False)
    _loop: AdminLoop | None = field(default=None, init=False)

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Bring everything up; on any failure, remove what was started and raise."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._make_credentials()
            self._make_namespaces()
            self._make_certificates()
            self.start_world_dns()
            self.start_redis()
            self.start_dns()
            if self.acme:
                self.start_pebble()
            self.start_router()
            self.start_backend()
            if self.explorer:
                self.start_explorer()
            if self.with_agent:
                self.start_agent()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every process (agent first, so nothing writes to a dying redis), remove netns."""
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.procs[name].stop()
        self.procs.clear()
        if hasattr(self, "world"):
            self.world.close()
        if self._loop is not None:
            if self._admin is not None:
                with contextlib.suppress(Exception):
                    self._loop.run(self._admin.aclose(), timeout=5)
            self._loop.close()
            self._loop = None
            self._admin = None
        if hasattr(self, "netns"):
            self.netns.close()

    # ---- namespaces --------------------------------------------------------------------------

    @property
    def gw(self) -> Namespace:
        return self.netns["gw"]

    @property
    def client(self) -> Namespace:
        return self.netns["client"]

    @property
    def backend(self) -> Namespace:
        return self.netns["backend"]

    @property
    def natc(self) -> Namespace:
        return self.netns["natc"]

    def _make_namespaces(self) -> None:
        self.log("creating network namespaces")
        self.netns = NamespaceSet()
        gw = self.netns.add("gw")
        for role, gw_addr, addr, ifname in (
            ("client", GW_CLIENT_ADDR, CLIENT_ADDR, "gw-client"),
            ("backend", GW_BACKEND_ADDR, BACKEND_ADDR, "gw-backend"),
            ("natc", GW_NATC_ADDR, NATC_ADDR, "gw-natc"),
        ):
            ns = self.netns.add(role)
            self.netns.link(Link(gw, f"{gw_addr}/24", ns, f"{addr}/24"), ifname, "uplink")
        gw.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        # The NATed client: outgoing connections only, like a home behind NAT.
        for rule in (
            ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
            ["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            ["-P", "INPUT", "DROP"],
        ):
            self.natc.run("iptables", *rule)

    def _make_credentials(self) -> None:
        """The redis password, as systemd hands credentials over: a root-only file in a
        directory named by $CREDENTIALS_DIRECTORY."""
        self.credentials = self.workdir / "credentials"
        self.credentials.mkdir(mode=0o700, exist_ok=True)
        path = self.credentials / "redis-password"
        if not path.exists():
            path.write_text(secrets.token_hex(32) + "\n")
            path.chmod(0o400)
        self.redis_password = path.read_text().strip()

    @property
    def redis_password_file(self) -> Path:
        return self.credentials / "redis-password"

    def _make_certificates(self) -> None:
        """A CA the client trusts and one certificate per site, so tests can tell them apart."""
        self.ca = trustme.CA()
        self.ca_pem = self.workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        for site in ("backend", "natc"):
            cert = self.ca.issue_cert(
                f"*.{MANAGED_DOMAIN}", "*.delegated.example", "*.pass.example", f"{site}.test"
            )
            cert.private_key_pem.write_to_path(str(self.workdir / f"{site}.key"))
            cert.cert_chain_pems[0].write_to_path(str(self.workdir / f"{site}.pem"))

    def site_cert_der(self, site: str) -> bytes:
        pem = (self.workdir / f"{site}.pem").read_text()
        return ssl.PEM_cert_to_DER_cert(pem)

    # ---- processes ---------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        ns: Namespace | None = None,
        env: dict[str, str] | None = None,
    ) -> Process:
        """Start a program (inside `ns` if given), output to <workdir>/<name>.log; its
        $CREDENTIALS_DIRECTORY holds the redis password, as under systemd."""
        if name in self.procs and self.procs[name].alive():
            raise GatewayError(f"{name} is already running")
        log = self.workdir / f"{name}.log"
        full = ns.exec_args(args) if ns is not None else list(args)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                env={
                    **os.environ,
                    "PYTHONPATH": str(REPO),
                    "PYTHONUNBUFFERED": "1",
                    "CREDENTIALS_DIRECTORY": str(self.credentials),
                    **(env or {}),
                },
            )
        proc = Process(name, popen, log)
        self.procs[name] = proc
        return proc

    def wait_ready(self, proc: Process, ready: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not proc.alive():
                raise GatewayError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise GatewayError(f"{proc.name} not ready after {timeout}s:\n{proc.tail()}")
            time.sleep(0.05)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def start_world_dns(self) -> None:
        """The Internet's DNS, in the client namespace: where name owners publish proofs."""
        self.log("starting the world's DNS (where name owners publish their proofs)")
        self.world = WorldDNS(
            self.workdir / "world", ns=self.client, address=CLIENT_ADDR, dns_port=DNS_PORT,
            redis_port=REDIS_PORT,
        )  # fmt: skip
        self.world.start()

    def publish_proof(self, name: str, *users: User) -> None:
        """What the owner of `name` does to let these users claim it on the gateway: a TXT
        record at `_tfgateway.<name>` holding their ids, in the world's DNS."""
        self.world.publish_proof(name, *(u.id for u in users))

    @property
    def redis_dir(self) -> Path:
        return self.workdir / "redis"

    def start_redis(self) -> None:
        """redis as the appliance runs it: loopback only, append-only file and snapshots, a
        password (in a configuration file, as nixpkgs' module writes it, never on the command
        line)."""
        self.log("starting redis (persistent, with a password)")
        self.redis_dir.mkdir(exist_ok=True)
        conf = self.workdir / "redis.conf"
        if self.rendered is not None:
            text = self.rendered.redis_conf(self.redis_dir, self.redis_password_file)
        else:
            text = (
                f"port {REDIS_PORT}\nbind 127.0.0.1\ndir {self.redis_dir}\nappendonly yes\n"
                "appendfsync everysec\nsave 900 1\nsave 300 10\nsave 60 10000\n"
                f"notify-keyspace-events KEA\nrequirepass {self.redis_password}\n"
            )
        conf.write_text(text)
        conf.chmod(0o600)
        proc = self.spawn("redis", [binary("redis-server"), str(conf)], self.gw)
        # An open port is not enough: while redis loads its files it answers LOADING.
        self.wait_ready(
            proc,
            lambda: (
                self.gw.port_open("127.0.0.1", REDIS_PORT)
                and self.redis_cli("PING", check=False).strip() == "PONG"
            ),
        )

    def redis_cli(self, *args: str, check: bool = True) -> str:
        """redis-cli against the gateway's redis, authenticated."""
        return self.gw.run(
            "redis-cli", "-p", str(REDIS_PORT), "-a", self.redis_password, "--no-auth-warning",
            *args, check=check,
        )  # fmt: skip

    def restart_redis(self) -> None:
        """A clean restart (SIGTERM lets redis write its files), data kept on disk."""
        self.stop("redis")
        self.start_redis()

    def start_dns(self) -> None:
        self.log(f"starting CoreDNS ({self.dns_program})")
        corefile = self.workdir / "Corefile"
        if self.rendered is not None:
            corefile.write_text(self.rendered.corefile())
            args = self.rendered.dns_args(corefile)
        else:
            ns_list = " ".join(self.nameservers)
            plugin = (
                "    gatewaydns {\n"
                f"        address 127.0.0.1:{REDIS_PORT}\n"
                "        password_file {$CREDENTIALS_DIRECTORY}/redis-password\n"
                f"        nameservers {ns_list}\n"
                "    }\n"
            )
            corefile.write_text(
                f".:{DNS_PORT} {{\n    bind {' '.join(GW_ADDRESSES)}\n    errors\n"
                + ("    log\n" if self.dns_query_log else "")
                + plugin
                + "}\n"
            )
            args = [binary(self.dns_program), "-conf", str(corefile)]
        proc = self.spawn("coredns", args, self.gw)
        self.wait_ready(proc, lambda: self.gw.port_open(GW_CLIENT_ADDR, DNS_PORT))

    def start_pebble(self) -> None:
        """Pebble in the client namespace, resolving with the gateway's CoreDNS."""
        self.log("starting Pebble (ACME test server)")
        self.acme_server = pebble.write_config(self.workdir, CLIENT_ADDR, self.ca)
        args = self.acme_server.args(binary("pebble"), f"{GW_CLIENT_ADDR}:{DNS_PORT}")
        proc = self.spawn("pebble", args, self.client, env=pebble.ENV)
        self.wait_ready(
            proc,
            lambda: (
                self.client.port_open(CLIENT_ADDR, pebble.ACME_PORT)
                and self.client.port_open(CLIENT_ADDR, pebble.MANAGEMENT_PORT)
            ),
        )
        pebble.fetch_root(self.client, self.acme_server, self.ca_pem, self.pebble_root)

    @property
    def pebble_root(self) -> Path:
        """The root of the certificates the router gets from Pebble (clients verify with it)."""
        return self.workdir / "pebble-root.pem"

    def tls_table(self) -> str:
        """The router's [tls] table: Pebble as the ACME CA, storage in the router's state."""
        keys: dict[str, object] = {
            "storage": str(self.workdir / "router-state" / "certificates"),
            "acme_ca": self.acme_server.directory,
            "acme_ca_root": str(self.ca_pem),
            "acme_email": f"hostmaster@{MANAGED_DOMAIN}",
            "dns_resolver": f"{GW_CLIENT_ADDR}:{DNS_PORT}",
            **self.router_tls,
        }
        return "[tls]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())

    def start_router(self) -> None:
        self.log(f"starting the router ({self.router_program})")
        if self.rendered is not None:
            args = self.rendered.router_args()
        else:
            config = self.workdir / "router.toml"
            config.write_text(
                "[server]\n"
                'addr = "0.0.0.0"\n'
                f"port = {TLS_PORT}\nhttpport = {HTTP_PORT}\nclientsport = {TUNNEL_PORT}\n"
                "[server.dbbackend]\n"
                f'type = "redis"\naddr = "127.0.0.1"\nport = {REDIS_PORT}\n'
                'passwordfile = "${CREDENTIALS_DIRECTORY}/redis-password"\n'
                + (self.tls_table() if self.acme else "")
                # authenticated tunnels, as the NixOS module configures them (trs ignores it)
                + '[tunnels]\nkey = "${STATE_DIRECTORY}/tunnel-key.pem"\n'
            )
            args = [binary(self.router_program), "--config", str(config)]
            if self.router_program == "tfrouter":
                args += ["-metrics", f"127.0.0.1:{ROUTER_METRICS_PORT}"]
        state = self.workdir / "router-state"  # systemd's StateDirectory: the tunnel key
        state.mkdir(mode=0o700, exist_ok=True)
        proc = self.spawn("router", args, self.gw, env={"STATE_DIRECTORY": str(state)})
        self.wait_ready(
            proc,
            lambda: all(
                self.gw.port_open(GW_CLIENT_ADDR, p) for p in (HTTP_PORT, TLS_PORT, TUNNEL_PORT)
            ),
        )

    def _site(self, name: str, ns: Namespace, addr: str, http: int, tls: int, cert: str) -> None:
        args = [
            PYTHON, "-m", "tests.support.websites", "--name", name,
            "--http", f"{addr}:{http}", "--tls", f"{addr}:{tls}",
            "--cert", str(self.workdir / f"{cert}.pem"), "--key", str(self.workdir / f"{cert}.key"),
        ]  # fmt: skip
        proc = self.spawn(name, args, ns)
        local = "127.0.0.1" if addr == "0.0.0.0" else addr
        self.wait_ready(proc, lambda: ns.port_open(local, http) and ns.port_open(local, tls))

    def start_backend(self) -> None:
        self.log("starting the backend web server (HTTP and TLS)")
        self._site("backend", self.backend, BACKEND_ADDR, BACKEND_HTTP_PORT, BACKEND_TLS_PORT,
                   "backend")  # fmt: skip

    def start_natc_site(self) -> None:
        """The NATed user's local website: listens on all its addresses, yet the NAT (firewall)
        lets nothing in from outside, so only the tunnel client's tunnel can reach it."""
        self._site("natc-site", self.natc, "0.0.0.0", NATC_HTTP_PORT, NATC_TLS_PORT, "natc")

    def start_tunnel(self, secret: str, name: str = "tunnel", *extra: str) -> Process:
        """The user's tunnel client in the NATed namespace, tunnelling to its local site.

        `tftunnel` is the project's trc v0.1.0 drop-in (same flags, same wire protocol); the
        upstream `trc` cannot be built here (the Go module proxy refuses tcprouter). `extra`
        flags: `--pin <tunnel_pin()>` for the authenticated protocol."""
        args = [
            binary("tftunnel"),
            "--secret", secret,
            "--remote", f"{GW_NATC_ADDR}:{TUNNEL_PORT}",
            "--local", f"127.0.0.1:{NATC_HTTP_PORT}",
            "--local-tls", f"127.0.0.1:{NATC_TLS_PORT}",
            *extra,
        ]  # fmt: skip
        return self.spawn(name, args, self.natc)

    def tunnel_pin(self) -> str:
        """The pin of the router's tunnel key, as the router publishes it in redis."""
        return self.redis_cli("GET", "tfgateway:router:tunnel-pin").strip()

    def start_explorer(self) -> None:
        self.log("starting the development explorer")
        self.explorer_port = free_port()
        state = self.workdir / "explorer"
        state.mkdir(exist_ok=True)
        # One process, two listening sockets on 127.0.0.1:port: the host's (tests, admin API)
        # and one inside gw (the agent), so no relay copies the agent's traffic.
        proc = self.spawn(
            "explorer",
            [agent_program("tfgateway-devexplorer"), "--host", "127.0.0.1",
             "--port", str(self.explorer_port), "--netns", self.gw.name],
        )  # fmt: skip
        self.wait_ready(
            proc,
            lambda: (
                port_open("127.0.0.1", self.explorer_port)
                and self.gw.port_open("127.0.0.1", self.explorer_port)
            ),
        )
        self._loop = AdminLoop()
        self._admin = self._loop.run(self._make_admin())

    async def _make_admin(self) -> AdminClient:
        return AdminClient(self.explorer_url)

    @property
    def explorer_url(self) -> str:
        """The explorer's root, as the agent (inside gw) and the host both reach it."""
        return f"http://127.0.0.1:{self.explorer_port}"

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            raise GatewayError("the development explorer is not running")
        return self._admin

    def call(self, coro: Coroutine[object, object, T], timeout: float = 60.0) -> T:
        """Run an admin-client coroutine from synchronous code."""
        if self._loop is None:
            raise GatewayError("the development explorer is not running")
        return self._loop.run(coro, timeout)

    @property
    def seed_path(self) -> Path:
        return self.workdir / "seed.txt"

    def agent_args(self) -> list[str]:
        if self.rendered is not None and not self.explorer:
            if self.workloads is None:
                raise GatewayError("a standalone rendered gateway needs a workloads file")
            return self.rendered.standalone_agent_args(
                self.seed_path, self.credentials, self.workloads, self.world.resolver
            )
        if self.rendered is not None:
            return self.rendered.agent_args(
                self.explorer_url + "/api/v1", self.seed_path, self.credentials,
                self.world.resolver,
            )  # fmt: skip
        args = [
            agent_program("tfgateway"),
            "--seed", str(self.seed_path),
            *(["--explorer", self.explorer_url + "/api/v1"] if self.explorer else []),
            *(["--workloads", str(self.workloads)] if self.workloads is not None else []),
            "--redis", f"tcp://127.0.0.1:{REDIS_PORT}",
            "--redis-password-file", str(self.redis_password_file),
            "--tcp-client-port", str(TUNNEL_PORT),
            "--location", "50.85,4.35,Brussels,Belgium,Europe",  # never ask a geoip service
            # The backend's address is private (10.71.2.2): everything here is inside namespaces.
            "--allow-private-backends",
            "--proof-resolver", self.world.resolver,
        ]  # fmt: skip
        if self.poll_interval is not None:
            args += ["--poll-interval", str(self.poll_interval)]
        for domain in self.domains:
            args += ["--domains", domain]
        for nameserver in self.nameservers:
            args += ["--nameservers", nameserver]
        for addr in GW_ADDRESSES:
            args += ["--gateway-address", addr]
        return args + list(self.agent_extra_args)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def start_agent(self) -> None:
        """The agent, with a seed made beforehand so workloads can name its node id."""
        self.log("starting the agent")
        self.identity = load_or_create(self.seed_path)
        proc = self.spawn("agent", self.agent_args(), self.gw)
        # Ready once it registered with the explorer (standalone: once it applied its file);
        # the rest is observed through workloads.
        self.wait_ready(proc, self._registered if self.explorer else self._file_applied)

    def _file_applied(self) -> bool:
        return bool(self.redis_cli("EXISTS", "tfgateway:declared:file", check=False).strip() == "1")

    def signal_agent(self, sig: signal.Signals = signal.SIGHUP) -> None:
        """Send `sig` to the agent (`ip netns exec` runs it in place: same pid)."""
        os.kill(self.procs["agent"].popen.pid, sig)

    def status(self, *args: str) -> str:
        """`tfgateway status` inside gw, as the operator runs it."""
        return self.gw.run(
            agent_program("tfgateway"), "status", "--redis", f"tcp://127.0.0.1:{REDIS_PORT}",
            "--redis-password-file", str(self.redis_password_file), *args,
        )  # fmt: skip

    def _registered(self) -> bool:
        gateways = self.call(self.admin.state()).get("gateways", {})
        return self.node_id in (gateways if isinstance(gateways, dict) else str(gateways))

    def restart_agent(self) -> None:
        self.stop("agent")
        self.start_agent()

    def restart_dns(self) -> None:
        self.stop("coredns")
        self.start_dns()

    def router_metrics(self) -> str:
        """tfrouter's Prometheus text, read inside gw."""
        url = f"http://127.0.0.1:{ROUTER_METRICS_PORT}/metrics"
        return self.gw.run("curl", "-sS", "--fail", "--max-time", "5", url)

    def restart_router(self) -> None:
        self.stop("router")
        self.start_router()

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to a component (default: an unclean death) and reap it; restart it with
        its `start_*` method."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
        proc.popen.wait(10)

    def check_alive(self) -> None:
        """Fail loudly (with its log) if a component died."""
        for proc in self.procs.values():
            if not proc.alive():
                raise GatewayError(f"{proc.name} died ({proc.popen.returncode}):\n{proc.tail()}")

    # ---- users and workloads, through the development explorer's admin API -----------------

    def add_user(self) -> User:
        keys = UserKeys.generate()
        info = self.call(self.admin.create_user(keys.public_key_hex))
        return User(info.id, keys)

    def create(self, kind: str, user: User, **fields: object) -> int:
        """Publish a workload of `kind` for this gateway; returns its id."""
        info = self.call(self.admin.create_workload(kind, self.node_id, user.id, **fields))
        return info.id

    def delete(self, workload_id: int) -> None:
        self.call(self.admin.delete_workload(workload_id))

    def results_put(self, workload_id: int) -> list[Result]:
        """Every result the gateway PUT for this workload, oldest first.

        The explorer's current copy is not enough: an error result makes the explorer ask for
        the workload's deletion, so it soon reads `deleted`; the PUT history keeps the answer."""
        gwid = self.call(self.admin.get_workload(workload_id)).gwid
        puts = self.call(self.admin.state())["result_puts"]
        return [
            Result(
                RESULT_STATES.get(int(put["result"]["state"]), str(put["result"]["state"])),
                str(put["result"].get("message", "")),
                str(put["result"].get("data_json", "null")),
            )
            for put in puts
            if put.get("gwid") == gwid and put.get("status") == 201 and "result" in put
        ]

    def wait_result(self, workload_id: int, timeout: float = 20.0, state: str = "") -> Result:
        """The gateway's first answer to a workload; with `state="deleted"`, wait until the
        gateway reported the workload deleted (the explorer's next_action 6)."""
        if state == "deleted":
            self.call(self.admin.wait_for_deleted(workload_id, timeout), timeout + 10)
            return Result("deleted", "")
        deadline = time.monotonic() + timeout
        while True:
            results = self.results_put(workload_id)
            if results and (not state or results[-1].state == state):
                return results[-1] if state else results[0]
            if time.monotonic() > deadline:
                info = self.call(self.admin.get_workload(workload_id))
                raise TimeoutError(
                    f"workload {workload_id} ({info.type}) not answered after {timeout}s: "
                    f"next_action={info.next_action}, result={info.result}\n"
                    f"agent log:\n{self.procs['agent'].tail() if 'agent' in self.procs else ''}"
                )
            time.sleep(0.05)

    def encrypt_secret(self, user: User, secret: str) -> str:
        """A reverse-proxy secret as the user's tooling encrypts it for this gateway."""
        # Version 2 (the dev explorer's default workload version): ECDH with the user's key.
        return encrypt_secret(secret, self.node_id, version=2, user=user.keys)

    def redis_keys(self, pattern: str) -> list[str]:
        out = self.redis_cli("--raw", "KEYS", pattern)
        return [line for line in out.splitlines() if line]

    # ---- observing from the client namespace -------------------------------------------------

    def dns(
        self,
        name: str,
        rdtype: str = "A",
        *,
        ns: Namespace | None = None,
        tcp: bool = False,
        server: str = GW_CLIENT_ADDR,
    ) -> dns.message.Message:
        """Ask the gateway's nameserver (at `server`), from the client namespace unless told
        otherwise."""
        where = ns or self.client
        query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        if tcp:
            sock = where.connect(server, DNS_PORT, timeout=2.0)
            with sock:
                return dns.query.tcp(query, server, timeout=2.0, sock=sock)
        sock = where.open_socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.setblocking(False)
            return dns.query.udp(query, server, port=DNS_PORT, timeout=2.0, sock=sock)

    def http(self, host: str, *, port: int = HTTP_PORT, ns: Namespace | None = None) -> HttpReply:
        """GET / with a Host header through the gateway's router."""
        sock = (ns or self.client).connect(GW_CLIENT_ADDR, port, timeout=3.0)
        with sock:
            return _exchange(sock, host)

    def https(
        self,
        sni: str,
        *,
        port: int = TLS_PORT,
        ns: Namespace | None = None,
        cafile: Path | None = None,
    ) -> TlsReply:
        """GET / over TLS with SNI through the router, verifying against the test CA (or
        `cafile`, e.g. `pebble_root` for names the router terminates)."""
        ctx = ssl.create_default_context(cafile=str(cafile or self.ca_pem))
        raw = (ns or self.client).connect(GW_CLIENT_ADDR, port, timeout=3.0)
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
            if der is None:
                raise GatewayError("TLS peer sent no certificate")
            return TlsReply(_exchange(tls, sni), der)

    def refused(self, host: str, *, tls: bool = False) -> bool:
        """True if the router closes (or resets) a connection for `host` without an answer."""
        try:
            if tls:
                self.https(host)
            else:
                reply = self.http(host)
                return reply.status == 0
        except (OSError, ssl.SSLError):
            return True
        return False


def _exchange(sock: socket.socket, host: str) -> HttpReply:
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    if not data:
        return HttpReply(0, {}, b"")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return HttpReply(status, headers, body)


def wait_for(
    predicate: Callable[[], bool], timeout: float = 15.0, what: str = "", interval: float = 0.05
) -> None:
    """Poll with a deadline, treating network errors as 'not yet'."""

    def guarded() -> bool:
        try:
            return predicate()
        except (OSError, ssl.SSLError, dns.exception.DNSException, ValueError):
            return False

    wait_until(guarded, timeout=timeout, interval=interval, what=what)
