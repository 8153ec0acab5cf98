"""The Internet's DNS as a gateway's proof lookups see it, for tests: never the real Internet.

A real redis-server and a real `coredns-tfgw` (its gatewaydns plugin serving every zone hash of
that redis, updated by push), on their own ports, in a network namespace or on the host's
loopback. Tests publish and withdraw the proof records name owners would publish at their DNS
provider (`publish_proof`, `withdraw_proof`) and get back once the server answers accordingly.
The gateway's agent looks proofs up here with `--proof-resolver` (`resolver`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.netns import Namespace
from tests.support.processes import binary, free_dns_port, free_port, port_open, stop, wait_until

PROOF_LABEL = "_tfgateway"


def zone_of(name: str) -> str:
    """The zone a test name lives in at its 'DNS provider': its last two labels."""
    return ".".join(name.split(".")[-2:])


@dataclass
class WorldDNS:
    """Start with `start()`, stop with `close()` (idempotent). `address` is where the DNS
    server listens (in `ns` if given, else on the host)."""

    workdir: Path
    ns: Namespace | None = None
    address: str = "127.0.0.1"
    dns_port: int = 0
    redis_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def resolver(self) -> str:
        """The agent's `--proof-resolver` value."""
        return f"{self.address}:{self.dns_port}"

    def _args(self, args: list[str]) -> list[str]:
        return self.ns.exec_args(args) if self.ns is not None else args

    def _open(self, host: str, port: int) -> bool:
        return self.ns.port_open(host, port) if self.ns is not None else port_open(host, port)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        with log:
            proc = subprocess.Popen(
                self._args(args), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def start(self) -> WorldDNS:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_port = self.redis_port or free_port()
        self.dns_port = self.dns_port or free_dns_port()
        self._spawn("world-redis", [
            binary("redis-server"), "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
        ])  # fmt: skip
        wait_until(lambda: self._open("127.0.0.1", self.redis_port), what="world redis")
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f".:{self.dns_port} {{\n    bind {self.address}\n    errors\n"
            f"    gatewaydns {{\n        address 127.0.0.1:{self.redis_port}\n"
            "        nameservers ns1.world.test\n        ttl 5\n    }\n}\n"
        )
        self._spawn("world-dns", [binary("coredns-tfgw"), "-conf", str(corefile)])
        wait_until(lambda: self._open(self.address, self.dns_port), what="world DNS", timeout=20)
        return self

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop(proc)
        self.procs.clear()

    def __enter__(self) -> WorldDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records -----------------------------------------------------------------------------

    def _redis(self, *commands: tuple[str, ...]) -> None:
        """Run redis commands in one `redis-cli --pipe` (raw RESP: JSON needs no quoting)."""
        resp = b""
        for command in commands:
            resp += b"*%d\r\n" % len(command)
            for arg in command:
                data = arg.encode()
                resp += b"$%d\r\n%s\r\n" % (len(data), data)
        cmd = [binary("redis-cli"), "-p", str(self.redis_port), "--pipe"]
        subprocess.run(self._args(cmd), input=resp, check=True, capture_output=True, timeout=30)

    def add_zone(self, zone: str) -> None:
        """Serve `zone` (an apex address), so names in it without records are NXDOMAIN."""
        self._redis(*self._zone_commands(zone))
        wait_until(lambda: self.txt(zone) is not None, timeout=10, what=f"world zone {zone}")

    def _zone_commands(self, zone: str) -> list[tuple[str, ...]]:
        apex = json.dumps({"a": [{"ip": "192.0.2.10", "ttl": 5}]})
        return [("HSETNX", f"{zone}.", "@", apex), ("PUBLISH", "tfgateway:dns", f"{zone}. @")]

    def set_txt(self, name: str, *texts: str) -> None:
        """TXT records at `name` (none: the name goes); returns once the server answers so."""
        self.set_many({name: texts})

    def set_many(self, records: dict[str, tuple[str, ...]]) -> None:
        """Several names' TXT records at once; returns once the server answers them all."""
        commands: list[tuple[str, ...]] = []
        for name, texts in records.items():
            zone = zone_of(name)
            field_name = name[: -(len(zone) + 1)] if name != zone else "@"
            commands += self._zone_commands(zone)
            if texts:
                value = json.dumps({"txt": [{"text": t, "ttl": 5} for t in texts]})
                commands.append(("HSET", f"{zone}.", field_name, value))
            else:
                commands.append(("HDEL", f"{zone}.", field_name))
            commands.append(("PUBLISH", "tfgateway:dns", f"{zone}. {field_name}"))
        self._redis(*commands)
        for name, texts in records.items():
            self._wait_txt(name, sorted(texts))

    def _wait_txt(self, name: str, texts: list[str]) -> None:
        wait_until(lambda: self.txt(name) == texts, timeout=10, what=f"world TXT {name}")

    def publish_proof(self, name: str, *users: object) -> None:
        """What the owner of `name` publishes to let these users claim it on a gateway."""
        self.set_txt(f"{PROOF_LABEL}.{name}", *(str(u) for u in users))

    def publish_proofs(self, owners: dict[str, object]) -> None:
        """`publish_proof` for many names (name → user) at once."""
        self.set_many({f"{PROOF_LABEL}.{n}": (str(u),) for n, u in owners.items()})

    def publish_delegation_proofs(self, specs: Iterable[dict[str, Any]]) -> None:
        """Proofs for every delegation among workload specs (`domain` by `customer_tid`), as
        those domains' owners would publish them."""
        self.publish_proofs(
            {s["domain"]: s["customer_tid"] for s in specs if s["type"] == "domain_delegate"}
        )

    def withdraw_proof(self, name: str) -> None:
        self.set_txt(f"{PROOF_LABEL}.{name}")

    def _ask(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message:
        if tcp:
            if self.ns is not None:
                sock = self.ns.connect(self.address, self.dns_port, timeout=1.0)
            else:
                sock = socket.create_connection((self.address, self.dns_port), timeout=1.0)
            with sock:
                return dns.query.tcp(
                    query, self.address, port=self.dns_port, timeout=1.0, sock=sock
                )
        if self.ns is not None:
            sock = self.ns.open_socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.setblocking(False)
            return dns.query.udp(query, self.address, 1.0, self.dns_port, sock=sock)

    def txt(self, name: str) -> list[str] | None:
        """The TXT texts the server answers for `name` (sorted); None without an answer."""
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        try:
            reply = self._ask(query, tcp=False)
            if reply.flags & dns.flags.TC:
                reply = self._ask(query, tcp=True)
        except (dns.exception.DNSException, OSError):
            return None
        if reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return None
        return sorted(
            b"".join(rd.strings).decode("utf-8", "replace")
            for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rd in rrset
        )
