"""The local run without an explorer: the gateway serving a workloads file (docs/workloads.md).

`scripts/demo.sh --standalone` runs this (through tests.support.demo). The same namespaces as
the explorer run (tests.support.gateway), but no development explorer: the agent runs with
`--workloads <workdir>/workloads.toml` and without `--explorer`, and every workload is an entry
of that file, written here as an operator would. It waits until every printed command works,
prints them (dig, curl, `tfgateway status` with the `tftunnel` command line and the 4to6 peer's
WireGuard configuration), and with `--check` also edits the file and waits until the change is
served, so the live reload is part of what the test suite checks.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    GW_CLIENT_ADDR,
    GW_NATC_ADDR,
    MANAGED_DOMAIN,
    NAMESERVER,
    NATC_HTTP_PORT,
    NATC_TLS_PORT,
    REDIS_PORT,
    TUNNEL_PORT,
    Gateway,
    Process,
)
from tests.support.processes import agent_program, binary
from tests.support.shell_commands import Command

WEB = f"web.{MANAGED_DOMAIN}"
HOME = f"home.{MANAGED_DOMAIN}"
SHOP = f"shop.{MANAGED_DOMAIN}"  # the router terminates TLS for it (terminate_tls = true)
ADDED = f"added.{MANAGED_DOMAIN}"  # the entry --check adds to show a live change
ZONE = "demo.example"
ZONE_HOST = f"www.{ZONE}"
ZONE_HOST_ADDR = "198.51.100.80"
WEB_AAAA = "2001:db8::80"
ADDED_ADDR = "198.51.100.81"


@dataclass(frozen=True)
class Entry:
    """One entry of the workloads file, as printed in the demo's table."""

    kind: str
    name: str
    fields: dict[str, object]
    what: str

    def toml(self) -> str:
        lines = [f"[[{self.kind}]]", f'name = "{self.name}"']
        lines += [f"{key} = {_toml(value)}" for key, value in self.fields.items()]
        return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def entries(tunnel_secret_file: Path) -> list[Entry]:
    """One entry of each kind the local run can serve (4to6 needs kernel WireGuard, which only
    the NixOS VM test has, so the peer is declared but its interface is not created here)."""
    backend = {"address": BACKEND_ADDR, "port": BACKEND_HTTP_PORT, "port_tls": BACKEND_TLS_PORT}
    return [
        Entry("subdomain", "web-dns", {"domain": WEB, "addresses": [GW_CLIENT_ADDR, WEB_AAAA]},
              f"{WEB}: A {GW_CLIENT_ADDR}, AAAA {WEB_AAAA}"),
        Entry("proxy", "web", {"domain": WEB, **backend},
              f"{WEB} → backend {BACKEND_ADDR}:{BACKEND_HTTP_PORT} / :{BACKEND_TLS_PORT}"),
        Entry("delegation", "demo", {"domain": ZONE},
              f"{ZONE}: apex SOA/NS (the operator's own: no proof of control needed)"),
        Entry("subdomain", "demo-www", {"domain": ZONE_HOST, "addresses": [ZONE_HOST_ADDR]},
              f"{ZONE_HOST}: A {ZONE_HOST_ADDR} (in the delegated zone)"),
        Entry("subdomain", "home-dns", {"domain": HOME, "addresses": [GW_CLIENT_ADDR]},
              f"{HOME}: A {GW_CLIENT_ADDR}"),
        Entry("reverse_proxy", "home", {"domain": HOME, "secret_file": str(tunnel_secret_file)},
              f"{HOME} → tftunnel in the NATed home → its site"),
        Entry("subdomain", "shop-dns", {"domain": SHOP, "addresses": [GW_CLIENT_ADDR]},
              f"{SHOP}: A {GW_CLIENT_ADDR}"),
        Entry("proxy", "shop", {"domain": SHOP, **backend, "terminate_tls": True},
              f"{SHOP}: HTTPS with a certificate from Pebble → backend's plain HTTP"),
    ]  # fmt: skip


@dataclass
class StandaloneRun:
    """The workloads file and the commands that show it is served."""

    gw: Gateway
    secret_file: Path
    entries: list[Entry]

    @property
    def workloads(self) -> Path:
        if self.gw.workloads is None:
            raise RuntimeError("the gateway has no workloads file")
        return self.gw.workloads

    @classmethod
    def create(
        cls, workdir: Path, log: Callable[[str], None], router_tls: dict[str, object]
    ) -> StandaloneRun:
        """The file and the gateway (with Pebble, a local ACME CA, for `terminate_tls`)."""
        workdir.mkdir(parents=True, exist_ok=True)
        # The tunnel secret, in its own root-only file (systemd credential on NixOS); `0:` is
        # the operator's owner id (docs/workloads.md, "Secrets").
        secret_file = workdir / "home-tunnel.secret"
        secret_file.write_text(f"0:{secrets.token_hex(16)}\n")
        secret_file.chmod(0o400)
        items = entries(secret_file)
        workloads = workdir / "workloads.toml"
        write_atomically(workloads, items)
        gw = Gateway(
            workdir, log=log, acme=True, router_tls=router_tls, explorer=False, workloads=workloads
        )
        return cls(gw, secret_file, items)

    def start(self) -> None:
        self.gw.start()
        self.gw.start_natc_site()
        self.start_tunnel()

    def start_tunnel(self) -> Process:
        """The NATed home's tunnel client, given the secret the operator handed over (in its
        environment, TRC_SECRET: never on a command line)."""
        args = [
            binary("tftunnel"),
            "--remote", f"{GW_NATC_ADDR}:{TUNNEL_PORT}",
            "--local", f"127.0.0.1:{NATC_HTTP_PORT}",
            "--local-tls", f"127.0.0.1:{NATC_TLS_PORT}",
        ]  # fmt: skip
        secret = self.secret_file.read_text().strip()
        return self.gw.spawn("tunnel", args, self.gw.natc, env={"TRC_SECRET": secret})

    def status_command(self) -> str:
        """`tfgateway status` as the operator runs it, inside the gateway's namespace."""
        return shlex.join(
            ["ip", "netns", "exec", self.gw.gw.name, agent_program("tfgateway"), "status",
             "--redis", f"tcp://127.0.0.1:{REDIS_PORT}",
             "--redis-password-file", str(self.gw.redis_password_file)]
        )  # fmt: skip

    def add_entry(self) -> Entry:
        """A live change, as an operator makes it: a new entry, the file replaced by rename."""
        added = Entry("subdomain", "added", {"domain": ADDED, "addresses": [ADDED_ADDR]},
                      f"{ADDED}: A {ADDED_ADDR} (added while running)")  # fmt: skip
        self.entries.append(added)
        write_atomically(self.workloads, self.entries)
        return added

    def commands(self) -> list[Command]:
        gw = self.gw
        client = f"ip netns exec {gw.client.name}"
        dig = f"{client} dig @{GW_CLIENT_ADDR}"
        curl = f"{client} curl -sS --max-time 5"
        ca = shlex.quote(str(gw.ca_pem))
        pebble_root = shlex.quote(str(gw.pebble_root))
        return [
            Command("managed subdomain, A", f"{dig} +short {WEB} A", GW_CLIENT_ADDR),
            Command("managed subdomain, AAAA", f"{dig} +short {WEB} AAAA", WEB_AAAA),
            Command("delegated zone apex SOA", f"{dig} +noall +answer {ZONE} SOA", "SOA"),
            Command("delegated zone NS", f"{dig} +noall +answer {ZONE} NS", NAMESERVER),
            Command("name in the delegated zone", f"{dig} +short {ZONE_HOST} A", ZONE_HOST_ADDR),
            Command("a miss (NXDOMAIN + SOA)", f"{dig} nobody.{MANAGED_DOMAIN} A", "NXDOMAIN"),
            Command("proxy, HTTP by Host",
                    f"{curl} --resolve {WEB}:80:{GW_CLIENT_ADDR} http://{WEB}/", "backend http"),
            Command("proxy, TLS by SNI (backend's certificate)",
                    f"{curl} --cacert {ca} --resolve {WEB}:443:{GW_CLIENT_ADDR} https://{WEB}/",
                    "backend https"),
            Command("reverse tunnel (tftunnel), HTTP",
                    f"{curl} --resolve {HOME}:80:{GW_CLIENT_ADDR} http://{HOME}/",
                    "natc-site http"),
            Command("reverse tunnel (tftunnel), TLS",
                    f"{curl} --cacert {ca} --resolve {HOME}:443:{GW_CLIENT_ADDR} https://{HOME}/",
                    "natc-site https"),
            Command("TLS terminated by the router (certificate from Pebble)",
                    f"{curl} -i --cacert {pebble_root} --resolve {SHOP}:443:{GW_CLIENT_ADDR} "
                    f"https://{SHOP}/", f"backend http host={SHOP}"),
            Command("every declared workload, its state, and the tunnel's tftunnel command line",
                    self.status_command(), "tftunnel"),
        ]  # fmt: skip

    def status(self) -> str:
        """What `tfgateway status` prints now."""
        out = subprocess.run(
            ["bash", "-c", self.status_command()], capture_output=True, text=True, timeout=30
        )
        return out.stdout + out.stderr

    def tunnel_command(self) -> str:
        """What the NATed home runs (the run started exactly this)."""
        return (
            f'TRC_SECRET="$(cat {shlex.quote(str(self.secret_file))})" '
            f"ip netns exec {self.gw.natc.name} {shlex.quote(binary('tftunnel'))} "
            f"--remote {GW_NATC_ADDR}:{TUNNEL_PORT} --local 127.0.0.1:{NATC_HTTP_PORT} "
            f"--local-tls 127.0.0.1:{NATC_TLS_PORT}"
        )

    def live_change(self, timeout: float) -> Command:
        """Add an entry to the running gateway's file and wait until it is served."""
        added = self.add_entry()
        domain = str(added.fields["domain"])
        check = Command(
            "the entry added while running",
            f"ip netns exec {self.gw.client.name} dig @{GW_CLIENT_ADDR} +short {domain} A",
            ADDED_ADDR,
        )
        deadline = time.monotonic() + timeout
        while not check.works():
            self.gw.check_alive()
            if time.monotonic() > deadline:
                raise SystemExit(f"the added entry was not served after {timeout}s")
            time.sleep(0.2)
        return check


def write_atomically(path: Path, items: list[Entry]) -> None:
    """Write the file as editors do: a new file renamed over the old one."""
    header = "# Workloads of the local standalone run (docs/workloads.md); edit me: the\n"
    header += "# running agent applies what changed within a second.\n\n"
    new = path.with_name(path.name + ".new")
    new.write_text(header + "\n".join(item.toml() for item in items))
    new.replace(path)
