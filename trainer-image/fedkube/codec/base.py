"""The codec seam. A codec turns an update (the model's tensors, dense float32) into the
tensors that travel ("wire tensors", whose names and shapes follow from the model's alone, so
the aggregator checks them before a byte arrives), and reads them back as dense pieces in
the model's own layout, one chunk-sized array at a time: folding never makes a model-sized
copy per site.

Lossy codecs are unbiased (stochastic rounding) or keep what they leave out at the site
(error feedback, ``error_feedback.py``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.tensors import Params, TensorInfo

# Dense pieces handed to the accumulator are at most this many values.
PIECE_VALUES = 1 << 18


class WireReader(Protocol):
    """What a codec reads wire tensors from (a spooled update, or arrays)."""

    def read(self, tensor: int, start: int, count: int) -> np.ndarray: ...


class Codec(ABC):
    wire: pb.Codec
    # Whether what the codec leaves out is kept at the site for later rounds (top-k); an
    # unbiased codec (int8) needs no such memory.
    feedback: bool = False

    @abstractmethod
    def wire_infos(self, infos: Sequence[TensorInfo]) -> list[TensorInfo]:
        """The wire tensors of an update of these tensors, in order."""

    @abstractmethod
    def encode(self, update: Params) -> tuple[Params, Params]:
        """(wire tensors, what each tensor's decoding will give back: the dense update the
        aggregator sees). The difference is what error feedback keeps."""

    @abstractmethod
    def pieces(
        self, reader: WireReader, infos: Sequence[TensorInfo]
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """(model tensor, first element, dense float32 values) covering every tensor."""

    def check(self, reader: WireReader, infos: Sequence[TensorInfo]) -> str | None:
        """What makes a whole update unreadable (an index out of range...), before any of it
        is folded; None when it is sound."""
        return None


# The largest finite float32: a decoded value past it is Inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def scale_problem(name: str, scales: np.ndarray, levels: int) -> str | None:
    """A quantised tensor's scales must be finite, and small enough that the largest code
    times the scale stays a finite float32: otherwise the update decodes to Inf."""
    worst = np.abs(scales.astype(np.float64)) * levels
    bad = np.flatnonzero(~np.isfinite(worst) | (worst > FLOAT32_MAX))
    if bad.size == 0:
        return None
    return (
        f"tensor {name!r}: scale {float(scales[bad[0]]):g} (block {int(bad[0])}) times the "
        f"largest code {levels} is not a finite float32; the update would decode to Inf"
    )


def stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """floor(x + u), u uniform in [0, 1): integers whose mean is x."""
    return np.floor(x + rng.random(x.shape, dtype=np.float64))
