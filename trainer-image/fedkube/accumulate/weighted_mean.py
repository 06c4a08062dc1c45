"""The mean: each update folded into running sums the moment it is whole."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkube.accumulate.base import Accumulator, UpdateSource
from fedkube.wire.tensors import Params, TensorInfo


class WeightedMean(Accumulator):
    """Running sum of weighted updates, folded chunk by chunk: about one model's size of
    memory, whatever the number of sites.

    The sums are float64: a float32 value times a sample count is exact in float64, and the
    sums of a round's few such products round there, far below float32's precision. So the
    float32 mean does not depend on the order the updates arrived in (which no transport
    fixes), and a job gives the same model over gRPC and in process."""

    def __init__(self, infos: Sequence[TensorInfo]) -> None:
        self.infos = list(infos)
        # Allocated on first use, so an idle aggregator holds only the global model.
        self._sums: list[np.ndarray] | None = None
        self.total_weight = 0.0
        self.count = 0

    def _buffers(self) -> list[np.ndarray]:
        if self._sums is None:
            self._sums = [np.zeros(i.size, dtype=np.float64) for i in self.infos]
        return self._sums

    def add(self, update: UpdateSource) -> None:
        try:
            for tensor, start, values in update.pieces():
                self.fold(tensor, start, values, update.weight)
            self.commit(update.weight)
        finally:
            update.close()

    def fold(self, tensor: int, start: int, values: np.ndarray, weight: float) -> None:
        target = self._buffers()[tensor][start : start + values.size]
        # values * weight makes one chunk-sized temporary, never a model-sized one.
        target += values.astype(np.float64) * weight

    def commit(self, weight: float) -> None:
        """One update has been folded whole."""
        self.total_weight += weight
        self.count += 1

    def mean(self) -> Params:
        if self.count == 0 or self.total_weight <= 0:
            raise ValueError("no update to average")
        sums = self._buffers()
        out: Params = {}
        for info, s in zip(self.infos, sums, strict=True):
            s /= self.total_weight
            out[info.name] = s.astype(info.dtype).reshape(info.shape)
        self._sums = None
        return out
