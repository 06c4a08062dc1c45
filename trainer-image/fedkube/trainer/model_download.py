"""The model as a site reads it from the aggregator: the header's tensors checked before a
byte is allocated for them, then the chunks against the header. An aggregator (broken or
hostile) that declares a model far larger than this job's, or tensors that cannot be, ends
this site's part with the reason; it never makes the site allocate what it declares."""

from __future__ import annotations

from collections.abc import Iterator

from fedkube.errors import JobFailed
from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.chunk_frames import Chunk
from fedkube.wire.tensors import Params, assemble, from_spec

# A model as it travels is at most the model, the strategy's tensors (SCAFFOLD's control
# variate: the model again) and a codec's positions: four times the model, and a little.
SIZE_FACTOR = 4
SLACK_BYTES = 1 << 20


def read_model(header: pb.ModelHeader, chunks: Iterator[Chunk], model_bytes: int) -> Params:
    """The tensors the header declares, read whole from ``chunks``. Raises JobFailed."""
    try:
        infos = [from_spec(s) for s in header.tensors]
    except ValueError as e:
        raise JobFailed(f"the aggregator's model header is unusable: {e}") from None
    declared = sum(i.nbytes for i in infos)
    limit = SIZE_FACTOR * model_bytes + SLACK_BYTES
    if declared > limit:
        raise JobFailed(
            f"the aggregator declares a model of {declared} bytes; this job's model is "
            f"{model_bytes} bytes (at most {limit} travel): not read"
        )
    if len({i.name for i in infos}) != len(infos):
        raise JobFailed("the aggregator's model header repeats a tensor name: not read")
    try:
        return assemble(infos, chunks)
    except ValueError as e:
        raise JobFailed(f"the aggregator's model stream is unusable: {e}") from None
