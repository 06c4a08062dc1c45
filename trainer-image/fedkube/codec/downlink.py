"""The model as the sites receive it, under a downlink codec.

Every site that kept up holds the same *reference* model; after each round the aggregator
sends the change from it to the new global model through the codec, and both sides add the
decoded change to the reference with the same code, so they stay equal bit for bit. What the
codec left out is still in the global model, so it goes out with later changes (error
feedback on the server side). A site that holds another version (new, restarted, late) gets
the whole reference; after the last round the reference is the global model itself, so the
final evaluation and the saved model are the same."""

from __future__ import annotations

import numpy as np

from fedkube.codec.base import Codec
from fedkube.codec.decoded import DecodedUpdate
from fedkube.errors import AggregatorUnavailable, JobFailed
from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.tensors import Params, specs_of


class WireArrays:
    """Wire tensors held as arrays, read as a codec reads them."""

    def __init__(self, wire: Params) -> None:
        self.flat = [np.ascontiguousarray(v).reshape(-1) for v in wire.values()]
        self.weight = 1.0

    def read(self, tensor: int, start: int, count: int) -> np.ndarray:
        return self.flat[tensor][start : start + count]

    def close(self) -> None:
        pass


def apply_change(codec: Codec, reference: Params, wire: Params) -> Params:
    """``reference`` plus the decoded change: the one computation both ends make."""
    out = {n: np.array(v, dtype=np.float32, copy=True).reshape(-1) for n, v in reference.items()}
    infos = specs_of(reference)
    for t, start, values in DecodedUpdate(WireArrays(wire), codec, infos).pieces():
        target = out[infos[t].name][start : start + values.size]
        target += values
    return {n: out[n].reshape(np.shape(v)) for n, v in reference.items()}


class Downlink:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.reference: Params | None = None
        self.version = -1
        self.change: Params | None = None  # wire tensors from version - 1 to version

    def publish(self, params: Params, version: int, whole: bool = False) -> None:
        """The global model of ``version``; ``whole``: make the reference exactly it."""
        if self.reference is None or whole or version != self.version + 1:
            self.reference = {n: np.array(v, dtype=np.float32) for n, v in params.items()}
            self.change = None
        else:
            delta = {n: (params[n] - self.reference[n]).astype(np.float32) for n in params}
            self.change, _ = self.codec.encode(delta)
            self.reference = apply_change(self.codec, self.reference, self.change)
        self.version = version

    def model_for(
        self, params: Params, version: int, request: pb.ModelRequest
    ) -> tuple[pb.Codec, int, Params]:
        """(codec, base version, model tensors) for the site asking: the change from the
        version it holds, or the whole reference (a restarted aggregator republishes)."""
        if self.version != version:
            self.publish(params, version, whole=True)
        change, model = self.serve(request.has_model, request.have_version)
        return (self.codec.wire, version - 1, model) if change else (pb.RAW, 0, model)

    def serve(self, has_model: bool, have_version: int) -> tuple[bool, Params]:
        """(whether it is a change, the tensors) for a site holding ``have_version``."""
        assert self.reference is not None
        if self.change is not None and has_model and have_version == self.version - 1:
            return True, self.change
        return False, self.reference


class HeldModel:
    """The site's end: the reference it holds, and the change the aggregator sends to it."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.held: tuple[int, Params] | None = None  # (version, model tensors)

    def request(self, ref: pb.RoundRef) -> pb.ModelRequest:
        held = self.held
        return pb.ModelRequest(
            ref=ref, has_model=held is not None, have_version=held[0] if held else 0
        )

    def keep(self, version: int, model: Params) -> None:
        """A whole model arrived: the reference the next change applies to."""
        self.held = (version, model)

    def apply(self, header: pb.ModelHeader, tensors: Params) -> Params:
        """The model behind a change (then the strategy's tensors, as they came). Raises
        JobFailed for a codec this site's manifest does not use, AggregatorUnavailable for a
        change from another version (the next request asks for the whole model)."""
        held = self.held
        if header.codec != self.codec.wire or held is None:
            raise JobFailed(
                f"the aggregator sent a model in codec {pb.Codec.Name(header.codec)}, which "
                "this site's manifest does not use"
            )
        if header.base_version != held[0]:
            self.held = None
            raise AggregatorUnavailable(
                f"a change from model {header.base_version}, but this site holds {held[0]}"
            )
        count = len(self.codec.wire_infos(specs_of(held[1])))
        names = list(tensors)
        model = apply_change(self.codec, held[1], {n: tensors[n] for n in names[:count]})
        self.keep(header.model_version, model)
        return {**model, **{n: tensors[n] for n in names[count:]}}
