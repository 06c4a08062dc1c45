"""A bare grpc.aio stream: what gRPC itself moves between two processes on this machine,
with no protocol of fedkube's on either side. The reference `bench/wire_speed.py` holds
fedkube's transfers against.

    python bench/_bare_grpc.py serve                      # prints its port, serves until killed
    python bench/_bare_grpc.py sites --endpoint H:P --sites 5 --bytes N --rounds R

The server streams ``N`` bytes to each site in 1 MiB messages of raw bytes (identity
serialisers: no protobuf) and takes ``N`` bytes back the same way. Each of the ``sites``
clients holds its own connection (as separate sites would) and, every round, downloads then
uploads, all sites at once: a federated round's shape at gRPC's own speed. gRPC's options are
its defaults. The sites print one JSON line: each transfer as [round, 0 down / 1 up, start,
end, bytes], on CLOCK_MONOTONIC (one clock for every process on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections.abc import AsyncIterator

import grpc

CHUNK = 1 << 20  # fedkube's chunk size (fedkube.wire.tensors.CHUNK_BYTES)
DOWNLOAD = "/bare.Bare/Download"
UPLOAD = "/bare.Bare/Upload"
# One connection per client, as the synthetic sites hold (fedkube.loadtest.sites).
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def identity(b: bytes) -> bytes:
    return b


async def serve() -> None:
    block = b"\x01" * CHUNK

    async def download(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        (size,) = struct.unpack("<Q", request)
        for offset in range(0, size, CHUNK):
            yield block if size - offset >= CHUNK else block[: size - offset]

    async def upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        total = 0
        async for message in requests:
            total += len(message)
        return struct.pack("<Q", total)

    handler = grpc.method_handlers_generic_handler(
        "bare.Bare",
        {
            "Download": grpc.unary_stream_rpc_method_handler(download, identity, identity),
            "Upload": grpc.stream_unary_rpc_method_handler(upload, identity, identity),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def site(endpoint: str, size: int, rounds: int, start: asyncio.Barrier) -> list[list[float]]:
    out: list[list[float]] = []
    block = b"\x02" * CHUNK
    async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as channel:
        await channel.channel_ready()
        down = channel.unary_stream(DOWNLOAD, identity, identity)
        up = channel.stream_unary(UPLOAD, identity, identity)

        async def chunks() -> AsyncIterator[bytes]:
            for offset in range(0, size, CHUNK):
                yield block if size - offset >= CHUNK else block[: size - offset]

        for number in range(1, rounds + 1):
            await start.wait()  # every site starts a round together, as a task arrives
            t0 = time.monotonic()
            got = 0
            async for message in down(struct.pack("<Q", size)):
                got += len(message)
            t1 = time.monotonic()
            (taken,) = struct.unpack("<Q", await up(chunks()))
            t2 = time.monotonic()
            assert got == size and taken == size, (got, taken, size)
            out += [[number, 0, t0, t1, got], [number, 1, t1, t2, taken]]
    return out


async def sites(endpoint: str, count: int, size: int, rounds: int) -> list[list[float]]:
    start = asyncio.Barrier(count)
    done = await asyncio.gather(*(site(endpoint, size, rounds, start) for _ in range(count)))
    return [t for one in done for t in one]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    s = sub.add_parser("sites")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--sites", type=int, default=5)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.command == "serve":
        asyncio.run(serve())
        return 0
    transfers = asyncio.run(sites(args.endpoint, args.sites, args.bytes, args.rounds))
    json.dump(transfers, sys.stdout)
    print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
