"""Coordinate-wise trimmed mean (Yin et al. 2018): drop the highest and lowest share of each
coordinate's values, average the rest."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkube.accumulate.robust_base import RobustAccumulator
from fedkube.wire.tensors import TensorInfo


class TrimmedMean(RobustAccumulator):
    def __init__(self, infos: Sequence[TensorInfo], fraction: float) -> None:
        super().__init__(infos)
        self.fraction = fraction

    def combine(self, tensor: int, start: int, count: int) -> np.ndarray:
        values = np.sort(self.stacked(tensor, start, count), axis=0)
        k = int(self.fraction * len(values))
        kept = values[k : len(values) - k] if len(values) - 2 * k > 0 else values
        return np.asarray(kept.mean(axis=0), np.float32)
