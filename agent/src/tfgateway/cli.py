"""The `tfgateway` command: the Go daemon's flags and defaults, plus `identity` and `status`.

`tfgateway [flags]` runs the gateway. Flags keep the Go names (`--seed`, `--explorer`, ...; the
single-dash spelling Go's flag parsers accept works too; repeatable `--domains` and
`--nameservers` also split on commas like urfave/cli). Every value is checked before anything
starts: a bad one stops the program with exit status 2 and a message naming the flag.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from tfgateway import __version__
from tfgateway.config import Config
from tfgateway.explorer.client import DEFAULT_TIMEOUT, base_url
from tfgateway.node.identity import SeedError, load_or_create
from tfgateway.node.location import DEFAULT_GEOIP, Location, LocationError, parse_location
from tfgateway.primitives.name_proofs import DEFAULT_GRACE, DEFAULT_RECHECK_INTERVAL, ProofMode
from tfgateway.primitives.proof import DEFAULT_TIMEOUT as DEFAULT_PROOF_TIMEOUT
from tfgateway.primitives.proof import parse_resolver
from tfgateway.primitives.validation import ValidationError, normalize_domain
from tfgateway.store.url import RedisAuthError, RedisURLError, parse_redis_url, read_password_file
from tfgateway.telemetry.logs import LOG_FORMATS
from tfgateway.telemetry.metrics import parse_listen

__all__ = ["build_parser", "main", "parse_config"]

DEFAULT_REDIS = "tcp://localhost:6379"
SUBCOMMANDS = ("identity", "status")

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (a dependency), else asyncio's own (None).

    uvloop (libuv, in Cython) runs the loop's own work in C: the agent's work is thousands of
    small redis and HTTP exchanges, and asyncio's loop (selector, transport writes, handles,
    futures) was 14 % of its CPU at 50,000 workloads (benchmarks/agent). Nothing depends on
    it: the agent behaves the same on asyncio's loop, which its tests use, and falls back to
    it where uvloop is missing (a Python it has no build for yet).
    """
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop of `loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def _names(option: str, dash: bool = True) -> list[str]:
    """`--name` plus Go's single-dash `-name`."""
    return [f"--{option}", f"-{option}"] if dash else [f"--{option}"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfgateway",
        allow_abbrev=False,
        description=(
            "ThreeFold Grid gateway agent: serves workloads (DNS subdomains and delegated "
            "zones, TCP proxies and reverse proxies through the router, 4to6 WireGuard tunnels) "
            "by writing redis: those the operator declares in a file (--workloads) and/or those "
            "reserved through an explorer it registers with and polls (--explorer). Without "
            "--explorer it runs standalone. SIGHUP re-reads the workloads file. "
            "Subcommands: 'tfgateway identity --seed FILE [--json]' prints the identity; "
            "'tfgateway status [--redis URL]' prints what this gateway serves."
        ),
    )
    _node_flags(p.add_argument_group("node"))
    _explorer_flags(p.add_argument_group("explorer"))
    _dns_flags(p.add_argument_group("DNS"))
    _proxy_flags(p.add_argument_group("proxies and reverse tunnels"))
    _name_proof_flags(p.add_argument_group("proof of control for names outside --domains"))
    _fourtosix_flags(p.add_argument_group("4to6 (WireGuard)"))
    _operation_flags(p.add_argument_group("operation"))
    p.add_argument("--version", action="version", version=f"tfgateway {__version__}")
    return p


def _node_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        *_names("seed"),
        default="identity.seed",
        metavar="FILE",
        help="identity seed file; created (mode 0400) when missing (default %(default)s)",
    )
    g.add_argument(
        *_names("redis"),
        default=DEFAULT_REDIS,
        metavar="URL",
        help="redis, tcp://[password@]host:port or unix:///path (default %(default)s)",
    )
    _password_file_flag(g)


def _password_file_flag(g: argparse._ActionsContainer) -> None:
    g.add_argument(
        "--redis-password-file",
        metavar="FILE",
        help="read the redis password from FILE (one trailing newline ignored), e.g. a systemd "
        "credential, instead of putting it in the --redis URL; a missing or empty file is an "
        "error",
    )


def _explorer_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        *_names("explorer"),
        default="",
        metavar="URL",
        help="explorer API to register with and poll (e.g. https://explorer.grid.tf/api/v1); a "
        "URL whose path is not /api/v1 gets /api/v1; without it the gateway runs standalone, "
        "serving only --workloads",
    )
    g.add_argument(
        "--workloads",
        default="",
        metavar="FILE",
        help="TOML file of workloads declared by the operator (docs/workloads.md); re-read "
        "when it changes and on SIGHUP, applying only what changed",
    )
    g.add_argument(*_names("farm"), type=int, default=0, help="farm id (default %(default)s)")
    g.add_argument(
        *_names("free"),
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="register as free to use",
    )
    g.add_argument(
        "--location",
        metavar="LAT,LON[,CITY,COUNTRY,CONTINENT]",
        help=f"location to register; default: asked from {DEFAULT_GEOIP} (3 s timeout; "
        "not asked for a loopback explorer); if that fails 'Unknown' is registered",
    )
    g.add_argument("--geoip-url", default=DEFAULT_GEOIP, metavar="URL", help=argparse.SUPPRESS)
    _seconds_flag(g, "--poll-interval", 10.0, "time between explorer polls")
    _seconds_flag(
        g,
        "--replay-interval",
        600.0,
        "ask the explorer for all workloads again (as after a restart) this often, so no "
        "delete is ever missed",
    )
    _seconds_flag(g, "--max-backoff", 30.0, "longest wait between retries of explorer calls")
    _seconds_flag(
        g,
        "--explorer-timeout",
        DEFAULT_TIMEOUT,
        "total time one explorer request may take (connect, send, answer); a request that "
        "takes longer fails and is retried like any transport error",
    )
    # tests only: the explorer expects an uptime report every 10 minutes
    g.add_argument("--uptime-interval", type=float, default=600.0, help=argparse.SUPPRESS)


def _dns_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        *_names("domains"),
        action="append",
        default=[],
        metavar="DOMAIN",
        help="domains this gateway manages; users get subdomains of them (repeatable)",
    )
    g.add_argument(
        *_names("nameservers"),
        action="append",
        default=[],
        metavar="NAME",
        help="host names of this gateway's DNS servers, for NS/SOA records (repeatable)",
    )


def _proxy_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        *_names("tcp-client-port"),
        type=int,
        default=18000,
        metavar="PORT",
        help="router port tunnel clients (trc) connect to, as registered (default %(default)s)",
    )
    g.add_argument(
        "--allow-private-backends",
        action="store_true",
        help="accept proxy targets in private ranges (RFC 1918, ULA, CGNAT); default: refused",
    )
    g.add_argument(
        "--gateway-address",
        action="append",
        default=[],
        metavar="IP",
        help="an address of this gateway, never accepted as a proxy target (repeatable; the "
        "host's interface addresses are added automatically)",
    )
    g.add_argument(
        "--terminate-tls",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="the router terminates TLS (certificates from its ACME CA) for proxies and reverse "
        "proxies on DOMAIN and every name under it, forwarding HTTP with X-Forwarded-* to the "
        "backend's plain port or the tunnel client's --local (repeatable; proxies without a "
        "plain port stay passthrough; the router needs a [tls] table)",
    )
    g.add_argument(
        "--terminate-tls-redirect",
        action="store_true",
        help="plain HTTP requests for names of --terminate-tls get a redirect to HTTPS",
    )


def _name_proof_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--name-proof",
        choices=[m.value for m in ProofMode],
        default=ProofMode.REQUIRED.value,
        help="required: a proxy, reverse proxy or delegation on a name outside --domains (and "
        "outside a zone the same user delegated) needs a TXT record at _tfgateway.<name> "
        "holding the user's id; first-come: the Go daemon's first come, first served, which "
        "lets any user claim a name its owner has not pointed at the gateway yet "
        "(default %(default)s)",
    )
    g.add_argument(
        "--proof-resolver",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="resolver to look proofs up with (repeatable; default: the host's "
        "/etc/resolv.conf); never this gateway's own CoreDNS, which answers for the zones "
        "it serves",
    )
    _seconds_flag(g, "--proof-timeout", DEFAULT_PROOF_TIMEOUT, "time one proof lookup may take")
    _seconds_flag(
        g,
        "--proof-recheck-interval",
        DEFAULT_RECHECK_INTERVAL,
        "look proven names up again this often; a name whose proof is gone is suspended (no "
        "longer served, kept, restored when the proof is back)",
    )
    _seconds_flag(
        g,
        "--proof-grace",
        DEFAULT_GRACE,
        "names served without proof when proofs are first enforced (an upgrade) are kept "
        "this long before their first check",
    )


def _fourtosix_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        *_names("endpoint"),
        default="",
        metavar="HOST:PORT",
        help="public WireGuard endpoint; with --wg-iface it enables 4to6 (default off)",
    )
    g.add_argument(
        *_names("wg-iface"),
        default="wg-tfgateway",
        metavar="NAME",
        help="WireGuard interface for 4to6 (default %(default)s)",
    )


def _operation_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        *_names("debug"),
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="debug logging",
    )
    g.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: '<time> <LEVEL> <logger> <message>' lines; json: one JSON object per line "
        "(time, level, logger, message; the fields of structured lines as keys of their own) "
        "(default %(default)s)",
    )
    g.add_argument(
        "--metrics-listen",
        default="",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default off)",
    )
    _seconds_flag(
        g,
        "--reconcile-interval",
        300.0,
        "re-apply every live workload to redis this often; a redis that lost its data or "
        "came back is noticed within a second regardless",
    )


def _seconds_flag(g: argparse._ArgumentGroup, flag: str, default: float, text: str) -> None:
    g.add_argument(
        flag,
        type=_seconds,
        default=default,
        metavar="SECONDS",
        help=f"{text} (default %(default)s)",
    )


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


class _FlagError(Exception):
    """A flag value that cannot be used; the message names the flag."""


def parse_config(argv: Sequence[str]) -> Config:
    """Daemon flags → Config; exits with status 2 and a clear message on any bad value."""
    parser = build_parser()
    a = parser.parse_args(list(argv))
    try:
        return _config(a)
    except _FlagError as exc:
        parser.error(str(exc))


def _config(a: argparse.Namespace) -> Config:
    _check_endpoints(a)
    _check_seconds(a)
    return Config(
        seed=a.seed,
        explorer=a.explorer,
        workloads=a.workloads,
        redis=a.redis,
        redis_password=_redis_password(a),
        debug=a.debug,
        farm=a.farm,
        nameservers=_domain_list("--nameservers", a.nameservers),
        domains=_domain_list("--domains", a.domains),
        tcp_client_port=a.tcp_client_port,
        endpoint=a.endpoint,
        wg_iface=a.wg_iface,
        free=a.free,
        location=_location(a.location),
        geoip_url=a.geoip_url,
        allow_private_backends=a.allow_private_backends,
        gateway_addresses=_addresses(a.gateway_address),
        terminate_tls=_domain_list("--terminate-tls", a.terminate_tls),
        terminate_tls_redirect=a.terminate_tls_redirect,
        metrics_listen=a.metrics_listen,
        poll_interval=a.poll_interval,
        reconcile_interval=a.reconcile_interval,
        replay_interval=a.replay_interval,
        max_backoff=a.max_backoff,
        uptime_interval=a.uptime_interval,
        request_timeout=a.explorer_timeout,
        log_format=a.log_format,
        name_proof=ProofMode(a.name_proof),
        proof_resolvers=_resolvers(a.proof_resolver),
        proof_timeout=a.proof_timeout,
        proof_recheck_interval=a.proof_recheck_interval,
        proof_grace=a.proof_grace,
    )


def _resolvers(values: Sequence[str]) -> tuple[tuple[str, int], ...]:
    try:
        return tuple(parse_resolver(v) for v in _split(values))
    except ValueError as exc:
        raise _FlagError(f"--proof-resolver: {exc}") from None


def _redis_password(a: argparse.Namespace) -> str | None:
    if a.redis_password_file is None:
        return None
    if parse_redis_url(a.redis).password is not None:
        raise _FlagError("--redis-password-file: the --redis URL has a password too; use one")
    try:
        return read_password_file(a.redis_password_file)
    except RedisURLError as exc:
        raise _FlagError(f"--redis-password-file: {exc}") from None


def _domain_list(flag: str, values: Sequence[str]) -> tuple[str, ...]:
    names = []
    for raw in _split(values):
        try:
            names.append(normalize_domain(raw))
        except ValidationError as exc:
            raise _FlagError(f"{flag} {raw!r}: {exc}") from None
    return tuple(names)


def _check_endpoints(a: argparse.Namespace) -> None:
    """--explorer, --redis, --tcp-client-port, --endpoint/--wg-iface, --metrics-listen."""
    if a.explorer:
        try:
            base_url(a.explorer)
        except ValueError as exc:
            raise _FlagError(f"--explorer: {exc}") from None
    try:
        parse_redis_url(a.redis)
    except RedisURLError as exc:
        raise _FlagError(f"--redis: {exc}") from None
    if not 0 < a.tcp_client_port < 65536:
        raise _FlagError(f"--tcp-client-port {a.tcp_client_port} is not a TCP port (1-65535)")
    if a.endpoint and a.wg_iface:
        from tfgateway.primitives.fourtosix import parse_endpoint

        try:
            parse_endpoint(a.endpoint)
        except ValueError as exc:
            raise _FlagError(f"--endpoint: {exc}") from None
        if len(a.wg_iface) > 15 or "/" in a.wg_iface or a.wg_iface.strip() != a.wg_iface:
            raise _FlagError(f"--wg-iface {a.wg_iface!r} is not a valid interface name")
    if a.metrics_listen:
        try:
            parse_listen(a.metrics_listen)
        except ValueError as exc:
            raise _FlagError(str(exc)) from None


def _check_seconds(a: argparse.Namespace) -> None:
    for flag, value in (
        ("--poll-interval", a.poll_interval),
        ("--reconcile-interval", a.reconcile_interval),
        ("--replay-interval", a.replay_interval),
        ("--max-backoff", a.max_backoff),
        ("--uptime-interval", a.uptime_interval),
        ("--explorer-timeout", a.explorer_timeout),
        ("--proof-timeout", a.proof_timeout),
        ("--proof-recheck-interval", a.proof_recheck_interval),
    ):
        if not (value > 0 and math.isfinite(value)):
            raise _FlagError(f"{flag} must be a finite number of seconds above 0, not {value!r}")
    if not (a.proof_grace >= 0 and math.isfinite(a.proof_grace)):
        raise _FlagError(f"--proof-grace must be a finite number of seconds, not {a.proof_grace!r}")


def _location(text: str | None) -> Location | None:
    if text is None:
        return None
    try:
        return parse_location(text)
    except LocationError as exc:
        raise _FlagError(str(exc)) from None


def _addresses(values: Sequence[str]) -> tuple[str, ...]:
    addresses = []
    for raw in _split(values):
        try:
            addresses.append(str(ipaddress.ip_address(raw)))
        except ValueError:
            raise _FlagError(f"--gateway-address {raw!r} is not an IP address") from None
    return tuple(addresses)


# -- subcommands ------------------------------------------------------------------------------


def identity_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="tfgateway identity",
        allow_abbrev=False,
        description="Print this gateway's identity (the seed file is created when missing).",
    )
    p.add_argument(*_names("seed"), default="identity.seed", metavar="FILE",
                   help="identity seed file (default %(default)s)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(list(argv))
    from tfgateway.primitives.fourtosix import subnet, wireguard_public_key

    try:
        identity = load_or_create(a.seed)
    except SeedError as exc:
        print(f"tfgateway identity: {exc}", file=sys.stderr)
        return 1
    info = {
        "node_id": identity.node_id,
        "public_key_hex": identity.public_key_hex,
        "wireguard_public_key": wireguard_public_key(identity.seed),
        "ipv6_prefix": str(subnet(identity.seed)),
    }
    if a.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def status_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="tfgateway status",
        allow_abbrev=False,
        description="Print the workloads this gateway serves and the delivery backlog, from redis.",
    )
    p.add_argument(*_names("redis"), default=DEFAULT_REDIS, metavar="URL",
                   help="redis URL (default %(default)s)")  # fmt: skip
    _password_file_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(list(argv))
    try:
        parse_redis_url(a.redis)
    except RedisURLError as exc:
        p.error(f"--redis: {exc}")
    try:
        password = _redis_password(a)
    except _FlagError as exc:
        p.error(str(exc))
    from redis.exceptions import RedisError

    from tfgateway.status import collect, render_table
    from tfgateway.store.url import check_auth, connect

    async def fetch() -> Any:
        await check_auth(a.redis, password)
        options = {} if password is None else {"password": password}
        client = connect(a.redis, socket_timeout=5.0, **options)
        try:
            return await collect(client)
        finally:
            await client.aclose()

    try:
        status = asyncio.run(fetch())
    except (RedisError, OSError, RedisAuthError) as exc:
        where = parse_redis_url(a.redis).describe()  # never the password of the URL
        print(f"tfgateway status: cannot read redis {where}: {exc}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(status.to_json()))
    else:
        print(render_table(status))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "identity":
        return identity_main(args[1:])
    if args and args[0] == "status":
        return status_main(args[1:])
    if args and args[0] == "run":
        args = args[1:]
    config = parse_config(args)
    from tfgateway.telemetry.logs import setup_logging

    setup_logging(config.debug, config.log_format)
    from tfgateway import app

    try:
        return run_loop(app.run(config))
    except (SeedError, RedisAuthError) as exc:
        print(f"tfgateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
