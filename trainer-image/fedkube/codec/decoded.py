"""A coded update as the accumulators see any update: dense pieces in the model's layout,
decoded a chunk at a time from the wire tensors held for it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from fedkube.codec.base import Codec
from fedkube.wire.tensors import TensorInfo


class WireUpdate(Protocol):
    weight: float

    def read(self, tensor: int, start: int, count: int) -> np.ndarray: ...

    def close(self) -> None: ...


class DecodedUpdate:
    def __init__(self, wire: WireUpdate, codec: Codec, infos: Sequence[TensorInfo]) -> None:
        self.wire = wire
        self.codec = codec
        self.infos = list(infos)
        self.weight = wire.weight

    def problem(self) -> str | None:
        """What makes the update unfit to fold: the codec's own checks, then every decoded
        value, which must be finite (a last guard whatever the codec)."""
        problem = self.codec.check(self.wire, self.infos)
        if problem is not None:
            return problem
        for t, start, values in self.pieces():
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                return (
                    f"tensor {self.infos[t].name!r} decodes to a non-finite value (NaN or Inf) "
                    f"at element {start + int(bad[0])}"
                )
        return None

    def pieces(self) -> Iterator[tuple[int, int, np.ndarray]]:
        return self.codec.pieces(self.wire, self.infos)

    def read(self, tensor: int, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.float32)
        for t, first, values in self.pieces():
            if t != tensor:
                continue
            lo, hi = max(start, first), min(start + count, first + values.size)
            if lo < hi:
                out[lo - start : hi - start] = values[lo - first : hi - first]
        return out

    def close(self) -> None:
        self.wire.close()
