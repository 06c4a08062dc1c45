"""A TCP proxy that holds every byte for a fixed delay each way: a long link's round-trip
time on loopback, with no bandwidth limit of its own (this machine has no netem).

    python bench/_latency_proxy.py --to HOST:PORT --delay-ms 25   # prints its port

Each direction forwards what it reads once its delay has passed, in order, so the path's
round-trip time is twice the delay plus loopback's own. TCP's own windows on loopback are
large, so what limits a transfer through it is what the endpoints allow in flight: gRPC's
HTTP/2 flow-control windows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await held.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(1 << 20):
            held.put_nowait((time.monotonic() + delay, data))
    finally:
        held.put_nowait((0.0, b""))
        with contextlib.suppress(Exception):
            await sender
        with contextlib.suppress(Exception):
            writer.close()


async def serve(target: str, delay: float) -> None:
    host, port = target.rsplit(":", 1)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            pump(reader, up_writer, delay), pump(up_reader, writer, delay), return_exceptions=True
        )

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--to", required=True)
    ap.add_argument("--delay-ms", type=float, required=True, help="each way")
    args = ap.parse_args()
    asyncio.run(serve(args.to, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
