"""A tiny website (HTTP and TLS) that says who it is, run as a program inside a namespace.

Why its own program: the backend and the NATed client's local site must be real servers in
other namespaces, reached only through the gateway. Each answer names the site and echoes the
Host header it received, so a test can tell that the request arrived untouched and where.

Usage: python -m tests.support.websites --name NAME [--http ADDR:PORT]
       [--tls ADDR:PORT --cert FILE --key FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
from collections.abc import Awaitable, Callable


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _handler(name: str, scheme: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        host = ""
        seen = ""  # forwarding headers (a TLS-terminating gateway's), echoed as X-Seen-*
        for line in head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "host":
                host = value.strip()
            elif key.strip().lower().startswith("x-forwarded-"):
                seen += f"X-Seen-{key.strip()[2:]}: {value.strip()}\r\n"
        body = f"{name} {scheme} host={host}\n".encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\nX-Site: {name}\r\n{seen}\r\n".encode()
            + body
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    return handle


async def serve(args: argparse.Namespace) -> None:
    servers: list[asyncio.Server] = []
    if args.http:
        host, port = _split(args.http)
        servers.append(await asyncio.start_server(_handler(args.name, "http"), host, port))
    if args.tls:
        if not (args.cert and args.key):
            raise SystemExit("--tls needs --cert and --key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        host, port = _split(args.tls)
        servers.append(
            await asyncio.start_server(_handler(args.name, "https"), host, port, ssl=ctx)
        )
    if not servers:
        raise SystemExit("nothing to serve: give --http and/or --tls")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--http")
    parser.add_argument("--tls")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
