"""The local run: the whole gateway in namespaces with sample workloads, and commands to try.

`scripts/demo.sh` runs this after setting the machine up. It starts everything
(tests.support.gateway), creates one workload of each kind in the development explorer, waits
until every printed command really works, prints what is served, and then waits for Ctrl-C
(or SIGTERM) to stop cleanly. `--check` stops right after the commands were verified, so a test
can make sure the local run never rots.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tests.support import pebble
from tests.support.demo_standalone import StandaloneRun
from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    CLIENT_ADDR,
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    Gateway,
    User,
)
from tests.support.shell_commands import Command

WEB = f"web.{MANAGED_DOMAIN}"
HOME = f"home.{MANAGED_DOMAIN}"
SHOP = f"shop.{MANAGED_DOMAIN}"  # the router terminates TLS for it (--terminate-tls)
ZONE = "demo.example"
ZONE_HOST = f"www.{ZONE}"
ZONE_HOST_ADDR = "198.51.100.80"
WEB_AAAA = "2001:db8::80"


@dataclass(frozen=True)
class Sample:
    kind: str
    name: str
    what: str
    workload: int


def say(message: str) -> None:
    print(f"  - {message}", flush=True)


def create_samples(gw: Gateway) -> tuple[User, list[Sample]]:
    """One workload of each kind, as a user would create them in the explorer."""
    user = gw.add_user()
    secret = f"{user.id}:{secrets.token_hex(8)}"
    encrypted = gw.encrypt_secret(user, secret)
    # The owner of the delegated domain proves control of it where its DNS is hosted today (the
    # world's DNS, in the client namespace): names outside the managed domain need that.
    gw.publish_proof(ZONE, user)
    samples = [
        Sample("subdomain", WEB, f"A {GW_CLIENT_ADDR}, AAAA {WEB_AAAA}",
               gw.create("subdomain", user, domain=WEB, ips=[GW_CLIENT_ADDR, WEB_AAAA])),
        Sample("proxy", WEB, f"→ backend {BACKEND_ADDR}:{BACKEND_HTTP_PORT} / :{BACKEND_TLS_PORT}",
               gw.create("proxy", user, domain=WEB, addr=BACKEND_ADDR, port=BACKEND_HTTP_PORT,
                         port_tls=BACKEND_TLS_PORT)),
        Sample("delegated domain", ZONE, "apex SOA/NS, __owner__ TXT",
               gw.create("domain_delegate", user, domain=ZONE)),
        Sample("subdomain", ZONE_HOST, f"A {ZONE_HOST_ADDR} (in the delegated zone)",
               gw.create("subdomain", user, domain=ZONE_HOST, ips=[ZONE_HOST_ADDR])),
        Sample("subdomain", HOME, f"A {GW_CLIENT_ADDR}",
               gw.create("subdomain", user, domain=HOME, ips=[GW_CLIENT_ADDR])),
        Sample("reverse proxy", HOME, "→ tftunnel (trc-compatible) in the NATed home → its site",
               gw.create("reverse_proxy", user, domain=HOME, secret=encrypted)),
        Sample("subdomain", SHOP, f"A {GW_CLIENT_ADDR}",
               gw.create("subdomain", user, domain=SHOP, ips=[GW_CLIENT_ADDR])),
        Sample("proxy, TLS terminated", SHOP,
               f"HTTPS with a certificate from Pebble (HTTP-01) → backend {BACKEND_ADDR}:"
               f"{BACKEND_HTTP_PORT} as plain HTTP with X-Forwarded-*",
               gw.create("proxy", user, domain=SHOP, addr=BACKEND_ADDR, port=BACKEND_HTTP_PORT)),
    ]  # fmt: skip
    gw.start_natc_site()
    gw.start_tunnel(secret)
    return user, samples


def commands(gw: Gateway, user_id: int) -> list[Command]:
    client = f"ip netns exec {gw.client.name}"
    dig = f"{client} dig @{GW_CLIENT_ADDR}"
    curl = f"{client} curl -sS --max-time 5"
    ca = shlex.quote(str(gw.ca_pem))
    pebble_root = shlex.quote(str(gw.pebble_root))
    return [
        Command("managed subdomain, A", f"{dig} +short {WEB} A", GW_CLIENT_ADDR),
        Command("managed subdomain, AAAA", f"{dig} +short {WEB} AAAA", WEB_AAAA),
        Command("delegated zone apex SOA", f"{dig} +noall +answer {ZONE} SOA", "SOA"),
        Command("delegated zone NS", f"{dig} +noall +answer {ZONE} NS", "NS"),
        Command("delegated zone owner", f"{dig} +short __owner__.{ZONE} TXT", "owner"),
        Command("the owner's proof of control, published at its DNS provider",
                f"{client} dig @{CLIENT_ADDR} +short _tfgateway.{ZONE} TXT", f'"{user_id}"'),
        Command("the same proof, answered by the gateway once the zone points at it",
                f"{dig} +short _tfgateway.{ZONE} TXT", f'"{user_id}"'),
        Command("name in the delegated zone", f"{dig} +short {ZONE_HOST} A", ZONE_HOST_ADDR),
        Command("a miss (NXDOMAIN + SOA)", f"{dig} nobody.{MANAGED_DOMAIN} A", "NXDOMAIN"),
        Command("proxy, HTTP by Host",
                f"{curl} --resolve {WEB}:80:{GW_CLIENT_ADDR} http://{WEB}/", "backend http"),
        Command("proxy, TLS by SNI (backend's certificate)",
                f"{curl} --cacert {ca} --resolve {WEB}:443:{GW_CLIENT_ADDR} https://{WEB}/",
                "backend https"),
        Command("reverse tunnel (tftunnel), HTTP",
                f"{curl} --resolve {HOME}:80:{GW_CLIENT_ADDR} http://{HOME}/", "natc-site http"),
        Command("reverse tunnel (tftunnel), TLS",
                f"{curl} --cacert {ca} --resolve {HOME}:443:{GW_CLIENT_ADDR} https://{HOME}/",
                "natc-site https"),
        Command("TLS terminated by the router (certificate from Pebble, verified with its root)",
                f"{curl} -i --cacert {pebble_root} --resolve {SHOP}:443:{GW_CLIENT_ADDR} "
                f"https://{SHOP}/", f"backend http host={SHOP}"),
        Command("explorer admin state (host loopback)",
                f"curl -sS --max-time 5 {gw.explorer_url}/dev/state", "gateways"),
    ]  # fmt: skip


def wait_live(gw: Gateway, samples: list[Sample], cmds: list[Command], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for sample in samples:
        result = gw.wait_result(sample.workload, timeout=max(1.0, deadline - time.monotonic()))
        if result.state != "ok":
            raise SystemExit(f"workload {sample.workload} ({sample.kind} {sample.name}) "
                             f"failed: {result.message}")  # fmt: skip
    wait_commands(gw, cmds, deadline, timeout)


def wait_commands(gw: Gateway, cmds: list[Command], deadline: float, timeout: float) -> None:
    """Until every command works (or `deadline`, which is `timeout` s after the start)."""
    pending = list(cmds)
    while pending:
        gw.check_alive()
        pending = [c for c in pending if not c.works()]
        if pending and time.monotonic() > deadline:
            lines = "\n".join(f"  {c.what}: {c.line}\n    {c.output()[-600:]}" for c in pending)
            raise SystemExit(f"not live after {timeout}s:\n{lines}")
        if pending:
            time.sleep(0.2)


def print_rows(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, the last one left as it is."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  " + "  ".join([*cells, row[-1]]))


def print_commands(gw: Gateway, cmds: list[Command]) -> None:
    print("\nNamespaces: " + ", ".join(ns.name for ns in gw.netns.namespaces.values()))
    print(f"Gateway address (inside the namespaces): {GW_CLIENT_ADDR}; logs in {gw.workdir}")
    print("\nTry these (they were just checked to work):\n")
    for c in cmds:
        print(f"  # {c.what}\n  {c.line}\n")


def print_table(gw: Gateway, samples: list[Sample], cmds: list[Command]) -> None:
    print("\nServed by the gateway (workloads in the development explorer):\n")
    print_rows([("workload", "kind", "name", "what"), *[
        (str(s.workload), s.kind, s.name, s.what) for s in samples
    ]])  # fmt: skip
    print_commands(gw, cmds)


def print_standalone(run: StandaloneRun, cmds: list[Command]) -> None:
    print(f"\nServed by the gateway (no explorer; entries of {run.workloads}):\n")
    print_rows([("kind", "name", "what"), *[(e.kind, e.name, e.what) for e in run.entries]])
    print_commands(run.gw, cmds)
    print("  # the NATed home's tunnel client (running; the secret read from its file)")
    print(f"  {run.tunnel_command()}\n")
    print(f"Edit {run.workloads} (docs/workloads.md): the agent applies what changed within")
    print("a second, or at once on SIGHUP; `tfgateway status` (above) shows each entry's state.")


class StopRequestedError(Exception):
    """Raised from the signal handler so every `finally` runs."""


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequestedError(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="verify the commands, then stop")
    parser.add_argument("--workdir", type=Path, help="logs and state (default: a new temp dir)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to become live")
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no explorer: the agent serves a workloads file (docs/workloads.md)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _stop)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tfgateway-demo-"))
    router_tls: dict[str, object] = {"acme_profile": pebble.DEFAULT, "challenges": ["http-01"]}
    run: StandaloneRun | None = None
    if args.standalone:
        run = StandaloneRun.create(workdir, say, router_tls)
        gw: Gateway = run.gw
    else:
        gw = Gateway(
            workdir,
            log=say,
            acme=True,  # Pebble, a local ACME CA, in the client namespace
            router_tls=router_tls,
            agent_extra_args=["--terminate-tls", SHOP],
        )
    code = 0
    try:
        print("Starting the gateway in network namespaces", flush=True)
        if run is not None:
            say(f"the workloads file: {run.workloads}")
            run.start()
            say("waiting until everything is live")
            cmds = run.commands()
            wait_commands(gw, cmds, time.monotonic() + args.timeout, args.timeout)
            print_standalone(run, cmds)
            print("\n" + run.status(), flush=True)
        else:
            gw.start()
            say("creating sample workloads in the development explorer")
            user, samples = create_samples(gw)
            say("waiting until everything is live")
            cmds = commands(gw, user.id)
            wait_live(gw, samples, cmds, args.timeout)
            print_table(gw, samples, cmds)
        if args.check:
            broken = [c for c in cmds if not c.works()]
            for c in broken:
                print(f"BROKEN: {c.what}: {c.line}", file=sys.stderr)
            if run is not None and not broken:
                live = run.live_change(args.timeout)
                print(f"live change: {live.what} is served: {live.line}")
            code = 1 if broken else 0
            print("check: all printed commands work" if not broken else "check FAILED")
        else:
            print("Press Ctrl-C to stop.", flush=True)
            while True:
                signal.pause()
    except StopRequestedError as stop:
        print(f"\n{stop}: stopping", flush=True)
    except SystemExit as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        gw.close()
        print("stopped: all processes ended and namespaces removed", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
