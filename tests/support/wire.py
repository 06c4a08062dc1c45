"""Playing a site over real gRPC by hand: fetch the model, cut an update into messages."""

from __future__ import annotations

from collections.abc import Iterator

from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.wire.tensors import Params, assemble, from_spec, iter_chunks, specs_of, to_spec


def fetch(stub: pb_grpc.AggregatorStub, site: str = "site-0") -> tuple[int, Params]:
    parts = stub.GetModel(pb.ModelRequest(ref=pb.RoundRef(job="refusals", round=1, site=site)))
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
) -> Iterator[pb.UpdatePart]:
    yield pb.UpdatePart(
        header=pb.UpdateHeader(
            ref=pb.RoundRef(job=job, round=round, attempt=1, site=site),
            model_version=version,
            num_samples=10,
            tensors=specs or [to_spec(i) for i in specs_of(update)],
            codec=pb.RAW,
        )
    )
    for c in iter_chunks(list(update.values())):
        yield pb.UpdatePart(chunk=c)
