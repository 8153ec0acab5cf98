"""Forward TCP from a listening address inside a namespace to an address in the host namespace.

Why: the development explorer runs in the host namespace (where tests and the local run drive
its admin API on loopback), while the agent runs inside the gateway namespace, which has no
route to the host. This program, started in the host namespace, opens its listening socket
inside the gateway namespace and relays each connection to the explorer on host loopback.

Usage: python -m tests.support.nsforward --netns NAME --listen ADDR:PORT --to ADDR:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket

from tests.support.netns import Namespace


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def run(netns: str, listen: tuple[str, int], to: tuple[str, int]) -> None:
    sock = Namespace(netns).open_socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listen)
    sock.listen(128)

    async def relay(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(*to)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(_pipe(c_reader, u_writer), _pipe(u_reader, c_writer))

    server = await asyncio.start_server(relay, sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.netns, _split(args.listen), _split(args.to)))


if __name__ == "__main__":
    main()
