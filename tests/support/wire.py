"""Playing a site over real gRPC by hand: fetch the model, cut an update into messages."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.wire.tensors import Params, assemble, from_spec, iter_chunks, specs_of, to_spec


def fetch(
    stub: pb_grpc.AggregatorStub, site: str = "site-0", job: str = "refusals", round: int = 1
) -> tuple[int, Params]:
    parts = stub.GetModel(pb.ModelRequest(ref=pb.RoundRef(job=job, round=round, site=site)))
    header = next(parts).header
    return header.model_version, assemble(
        [from_spec(s) for s in header.tensors], (p.chunk for p in parts)
    )


def parts(
    update: Params,
    *,
    site: str = "site-0",
    round: int = 1,
    version: int = 0,
    job: str = "refusals",
    specs: list[pb.TensorSpec] | None = None,
    codec: pb.Codec = pb.RAW,
    num_samples: int = 10,
) -> Iterator[pb.UpdatePart]:
    yield pb.UpdatePart(
        header=pb.UpdateHeader(
            ref=pb.RoundRef(job=job, round=round, attempt=1, site=site),
            model_version=version,
            num_samples=num_samples,
            tensors=specs or [to_spec(i) for i in specs_of(update)],
            codec=codec,
        )
    )
    for c in iter_chunks(list(update.values())):
        yield pb.UpdatePart(chunk=c)


class FakeSiteStream:
    """The test's own Subscribe stream, read on a thread into a queue."""

    def __init__(self, stub: pb_grpc.AggregatorStub, site: str, job: str = "refusals") -> None:
        self.events: queue.Queue[pb.Event] = queue.Queue()
        self.call = stub.Subscribe(
            pb.JoinRequest(job=job, site=site, protocol_version=PROTOCOL_VERSION)
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for e in self.call:
                self.events.put(e)
        except grpc.RpcError:
            pass

    def next_task(self) -> pb.Task:
        return self.events.get(timeout=60).task
