"""Coordinate-wise median (Yin et al. 2018): each coordinate takes the median of the sites'."""

from __future__ import annotations

import numpy as np

from fedkube.accumulate.robust_base import RobustAccumulator


class CoordinateMedian(RobustAccumulator):
    def combine(self, tensor: int, start: int, count: int) -> np.ndarray:
        return np.asarray(np.median(self.stacked(tensor, start, count), axis=0), np.float32)
