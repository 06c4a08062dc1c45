"""The synthetic sites: real gRPC clients of the real protocol, many on one asyncio loop,
each with its own connection, no torch and no data; and the process that runs a share of
them (``python -m fedkube.loadtest``), printing its counters as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field

import grpc
import numpy as np

from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.proto.compat import GO_AHEAD_METADATA
from fedkube.transport.bulk_calls import get_model, submit_update
from fedkube.wire.chunk_frames import encode_chunk_part
from fedkube.wire.tensors import CHUNK_BYTES

# The aggregator refuses what it cannot take now (a closed round, a duplicate): final for
# that message. Anything else means it is away: reconnect.
REFUSALS = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
}

CHANNEL_OPTIONS = [
    # One connection per site, as separate sites would have; gRPC otherwise shares one
    # connection between a process's channels to the same address.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


# Transfer kinds in ``Counters.transfers``.
DOWNLOAD, UPLOAD = 0, 1


def site_index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def site_value(index: int) -> float:
    """Every value of site ``index``'s update: eleven levels, mean zero over a full cycle."""
    return 1e-3 * ((index % 11) - 5)


def site_samples(index: int) -> int:
    return 10 + index % 7


def round_mean(sites: list[str]) -> float:
    """The FedAvg mean of these sites' updates: the value every parameter moves by."""
    idx = [site_index(s) for s in sites]
    weights = np.array([site_samples(i) for i in idx], dtype=np.float64)
    values = np.array([site_value(i) for i in idx], dtype=np.float64)
    return float(weights @ values / weights.sum())


@dataclass(frozen=True)
class Churn:
    """How sites come and go: each training task is dropped with ``drop`` probability
    (half before answering, half halfway through the upload), the site back after
    ``rejoin_seconds``; ``late`` of the sites join ``late_seconds`` after the start."""

    drop: float = 0.0
    rejoin_seconds: tuple[float, float] = (0.5, 3.0)
    late: float = 0.0
    late_seconds: tuple[float, float] = (0.0, 5.0)


@dataclass
class Counters:
    sites: int = 0
    finished: int = 0
    succeeded: int = 0
    connects: int = 0
    updates: int = 0
    evaluations: int = 0
    drops_before_answer: int = 0
    drops_mid_upload: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    # The sum of every parameter of each model version, as the sites fetched it; every
    # site must see the same, so disagreements are counted.
    model_sums: dict[int, float] = field(default_factory=dict)
    model_sum_disagreements: int = 0
    away: int = 0  # sites still away (dropped, not back) when told to stop
    # Each whole transfer, when timed: [round, 0 for a model download or 1 for an update
    # upload, start, end (CLOCK_MONOTONIC, one clock for every process on the machine),
    # tensor bytes].
    transfers: list[list[float]] = field(default_factory=list)

    def refused(self, e: grpc.aio.AioRpcError) -> None:
        key = e.code().name
        self.refusals[key] = self.refusals.get(key, 0) + 1


class Dropped(Exception):
    """The site leaves on purpose (churn)."""


class SyntheticSite:
    def __init__(
        self,
        endpoint: str,
        job: str,
        name: str,
        churn: Churn,
        counters: Counters,
        seed: int,
        lean: bool = False,
    ) -> None:
        self.endpoint, self.job, self.name = endpoint, job, name
        # Lean: a download only counts its bytes (no sums to check), and every transfer is
        # timed; what a transfer benchmark needs of a site, and no more.
        self.lean = lean
        self.index = site_index(name)
        self.value = np.float32(site_value(self.index))
        self.samples = site_samples(self.index)
        self.churn = churn
        self.counters = counters
        self.rng = random.Random(f"{seed}/{name}")
        self._get_model: grpc.aio.UnaryStreamMultiCallable | None = None  # on the site's channel
        self.go_ahead = False

    async def run(self, give_up_seconds: float = 300.0) -> None:
        if self.rng.random() < self.churn.late:
            await asyncio.sleep(self.rng.uniform(*self.churn.late_seconds))
        away_since: float | None = None
        while True:
            channel = grpc.aio.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
            try:
                self._get_model = get_model(channel)
                finished = await self._serve(pb_grpc.AggregatorStub(channel))
                if finished is not None:
                    self.counters.finished += 1
                    self.counters.succeeded += int(finished.succeeded)
                    return
                away_since = None
            except Dropped:
                away_since = None
                await channel.close(grace=None)
                await asyncio.sleep(self.rng.uniform(*self.churn.rejoin_seconds))
                continue
            except grpc.aio.AioRpcError as e:
                if e.code() in REFUSALS:
                    self.counters.refused(e)
                now = time.monotonic()
                away_since = away_since or now
                if now - away_since > give_up_seconds:
                    raise
            finally:
                await channel.close(grace=None)
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))

    async def _serve(self, stub: pb_grpc.AggregatorStub) -> pb.Finished | None:
        join = pb.JoinRequest(job=self.job, site=self.name, protocol_version=PROTOCOL_VERSION)
        events = stub.Subscribe(join)
        self.counters.connects += 1
        try:
            # As the trainer: an aggregator that gives uploads a go-ahead says so here.
            self.go_ahead = GO_AHEAD_METADATA in dict(await events.initial_metadata() or ())
            async for event in events:
                if event.HasField("finished"):
                    finished: pb.Finished = event.finished
                    return finished
                await self._handle(stub, event.task)
        finally:
            events.cancel()
        return None

    async def _handle(self, stub: pb_grpc.AggregatorStub, task: pb.Task) -> None:
        trains = task.stage == pb.TRAIN
        mid_upload = False
        if trains and self.rng.random() < self.churn.drop:
            if self.rng.random() < 0.5:
                self.counters.drops_before_answer += 1
                raise Dropped
            mid_upload = True
        ref = pb.RoundRef(
            job=self.job, round=task.ref.round, attempt=task.ref.attempt, site=self.name
        )
        version, specs, squares, count = await self._fetch(self._get_model, ref, trains)
        if task.evaluate:
            # A stand-in score computed from the model received: the weights' mean square.
            score = pb.Evaluation(
                ref=ref,
                model_version=version,
                num_samples=self.samples,
                metrics={"loss": squares / max(count, 1)},
            )
            if await self._call(stub.ReportEvaluation(score)):
                self.counters.evaluations += 1
        if not trains:
            return
        header = pb.UpdateHeader(
            ref=ref,
            model_version=version,
            num_samples=self.samples,
            metrics={"train_loss": squares / max(count, 1)},
            tensors=specs,
            codec=pb.RAW,
        )
        # Over a connection of its own, as the trainer's (``transport.grpc_link``).
        bulk = grpc.aio.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
        try:
            await self._upload(submit_update(bulk), header, mid_upload)
        finally:
            await bulk.close(grace=None)

    async def _fetch(
        self, call: grpc.aio.UnaryStreamMultiCallable | None, ref: pb.RoundRef, timed: bool
    ) -> tuple[int, list[pb.TensorSpec], float, int]:
        """The model's version and tensor specs, and the sum of squares and count of its
        values (its sum goes in the counters), read chunk by chunk: no site holds a model."""
        header: pb.ModelHeader | None = None
        total = squares = 0.0
        count = received = 0
        started = time.monotonic()
        assert call is not None, "a site fetches over its channel"
        async for part in call(pb.ModelRequest(ref=ref)):
            if isinstance(part, pb.ModelPart):  # the header; chunks come as ChunkPart
                header = part.header
                continue
            if self.lean:
                received += len(part.chunk.data)
                continue
            values = np.frombuffer(part.chunk.data, dtype=np.float32).astype(np.float64)
            total += float(values.sum())
            squares += float(values @ values)
            count += values.size
            self.counters.bytes_down += len(part.chunk.data)
        assert header is not None, "the model stream carries its header first"
        version = int(header.model_version)
        if self.lean:
            self.counters.bytes_down += received
            if timed:  # a training task's download; not the final model's, fetched to score
                self._timed(ref.round, DOWNLOAD, started, received)
            return version, list(header.tensors), 0.0, 0
        seen = self.counters.model_sums.setdefault(version, total)
        if abs(seen - total) > 1e-6 * max(1.0, abs(total)):
            self.counters.model_sum_disagreements += 1
        return version, list(header.tensors), squares, count

    async def _upload(
        self, submit: grpc.aio.StreamUnaryMultiCallable, header: pb.UpdateHeader, drop_halfway: bool
    ) -> None:
        """Stream the update a chunk at a time, as frames (``transport.bulk_calls``); a
        dropping site cuts its upload halfway."""
        started = time.monotonic()
        call = submit()
        sizes = [int(np.prod(s.shape)) * 4 for s in header.tensors]
        block = np.full(CHUNK_BYTES // 4, self.value, dtype=np.float32).tobytes()
        halfway, sent = sum(sizes) // 2, 0
        try:
            await call.write(pb.UpdatePart(header=header))
            if self.go_ahead:
                await call.initial_metadata()  # the upload holds a slot (or was refused)
            for index, nbytes in enumerate(sizes):
                for offset in range(0, nbytes, CHUNK_BYTES):
                    if drop_halfway and sent >= halfway:
                        call.cancel()
                        self.counters.drops_mid_upload += 1
                        raise Dropped
                    data = block[: min(CHUNK_BYTES, nbytes - offset)]
                    await call.write(encode_chunk_part(index, offset, data))
                    sent += len(data)
            await call.done_writing()
        except grpc.aio.AioRpcError:
            pass  # refused mid-stream: the status comes with the answer
        self.counters.bytes_up += sent
        if await self._call(call):
            self.counters.updates += 1
            self._timed(header.ref.round, UPLOAD, started, sent)

    def _timed(self, round_number: int, kind: int, started: float, nbytes: int) -> None:
        if self.lean:
            self.counters.transfers.append([round_number, kind, started, time.monotonic(), nbytes])

    async def _call(self, call: Awaitable[object]) -> bool:
        """Await one answer; whether it was taken. A refusal is final for this message,
        not for the site."""
        try:
            await call
        except grpc.aio.AioRpcError as e:
            if e.code() not in REFUSALS:
                raise
            self.counters.refused(e)
            return False
        return True


async def run_sites(
    endpoint: str, job: str, names: list[str], churn: Churn, seed: int = 0, lean: bool = False
) -> Counters:
    """Run the sites until each hears the job finish, or SIGTERM (those still away then
    are counted as ``away``)."""
    counters = Counters(sites=len(names))
    sites = [SyntheticSite(endpoint, job, n, churn, counters, seed, lean) for n in names]
    tasks = [asyncio.create_task(s.run()) for s in sites]
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: [t.cancel() for t in tasks]
    )
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    counters.away = sum(isinstance(o, asyncio.CancelledError) for o in outcomes)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    if errors:
        raise errors[0]
    return counters


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fedkube.loadtest", description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--first", type=int, default=0, help="the first site's index (site-N)")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--late", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--lean",
        action="store_true",
        help="count downloaded bytes without checking sums, and time every transfer",
    )
    args = p.parse_args(argv)
    names = [f"site-{i}" for i in range(args.first, args.first + args.count)]
    churn = Churn(drop=args.drop, late=args.late)
    counters = asyncio.run(run_sites(args.endpoint, args.job, names, churn, args.seed, args.lean))
    json.dump(asdict(counters), sys.stdout)
    print(flush=True)
    return 0
