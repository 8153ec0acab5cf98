"""`tfgateway-devexplorer`: run the development explorer (see agent/DEVEXPLORER.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tfgateway_devexplorer.netns import NetnsError, namespace_path
from tfgateway_devexplorer.server import API, DevExplorer, LoadError

log = logging.getLogger("tfgateway_devexplorer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tfgateway-devexplorer",
        description=(
            "Development TFExplorer: the explorer endpoints a gateway uses (under "
            f"{API}) plus an admin API under /dev/ to add users and workloads and inject faults."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="listen port, 0 = any free (default %(default)s)"
    )
    parser.add_argument(
        "--load",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help='JSON file {"users": [...], "workloads": [...]} loaded at start (repeatable); '
        "ignored when --state already holds a state",
    )
    parser.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="persist the whole state in FILE (written atomically after every change) and "
        "restore it at start",
    )
    parser.add_argument(
        "--netns",
        action="append",
        default=[],
        metavar="NAME",
        help="also listen on the same address and port inside network namespace NAME "
        "(/run/netns/NAME as `ip netns` makes it, or a path such as /proc/PID/ns/net; "
        "repeatable; needs CAP_SYS_ADMIN): a gateway in that namespace reaches the explorer "
        "on its own loopback",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="(default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a TCP port (0..65535)")
    if args.state is not None and not args.state.parent.is_dir():
        parser.error(f"--state {args.state}: directory {args.state.parent} does not exist")
    for name in args.netns:
        if not namespace_path(name).exists():
            parser.error(f"--netns {name}: no such network namespace ({namespace_path(name)})")
    return args


async def serve(args: argparse.Namespace) -> int:
    explorer = DevExplorer(
        host=args.host, port=args.port, state_file=args.state, netns=args.netns, freeze_gc=True
    )
    try:
        restored = explorer.load_state()
        if restored:
            log.info("state restored from %s", args.state)
        else:
            for path in args.load:
                users, workloads = explorer.load_seed_file(path)
                log.info("loaded %d users and %d workloads from %s", users, workloads, path)
            explorer.save_state()
    except LoadError as exc:
        print(f"tfgateway-devexplorer: {exc}", file=sys.stderr)
        return 2
    try:
        await explorer.start()
    except NetnsError as exc:
        print(f"tfgateway-devexplorer: {exc.strerror}", file=sys.stderr)
        await explorer.stop()
        return 1
    except OSError as exc:
        print(
            f"tfgateway-devexplorer: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        await explorer.stop()
        return 1
    # one line on stdout that scripts can wait for and parse
    print(f"devexplorer listening on {explorer.admin_url} explorer={explorer.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await explorer.stop()
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (it comes with the agent), else asyncio's.

    The development explorer shares the machine with the gateway it serves in tests and
    benchmarks; with uvloop it costs less of the CPU the agent is measured on."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
