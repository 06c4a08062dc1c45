"""Multi-Krum (Blanchard et al. 2017): score each update by its squared distances to its
n - f - 2 nearest others, and average (by samples) the m best-scored ones. Distances are
summed a block at a time, so no update is ever whole in memory."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkube.accumulate.robust_base import RobustAccumulator
from fedkube.wire.tensors import TensorInfo


class MultiKrum(RobustAccumulator):
    def __init__(self, infos: Sequence[TensorInfo], byzantine: int, selected: int | None) -> None:
        super().__init__(infos)
        self.byzantine = byzantine
        self.selected = selected
        self.chosen: list[int] = []

    def prepare(self) -> None:
        n = len(self.updates)
        distances = np.zeros((n, n), dtype=np.float64)
        for t, start, count in self.blocks():
            block = self.stacked(t, start, count).astype(np.float64)
            sq = np.sum(block**2, axis=1)
            distances += sq[:, None] + sq[None, :] - 2 * block @ block.T
        np.fill_diagonal(distances, np.inf)
        neighbours = max(1, n - self.byzantine - 2)
        scores = np.sort(distances, axis=1)[:, :neighbours].sum(axis=1)
        m = self.selected or max(1, n - self.byzantine)
        self.chosen = sorted(np.argsort(scores)[: min(m, n)].tolist())

    def combine(self, tensor: int, start: int, count: int) -> np.ndarray:
        weights = np.array([self.updates[i].weight for i in self.chosen], dtype=np.float32)
        block = self.stacked(tensor, start, count, self.chosen)
        return np.asarray((weights[:, None] * block).sum(axis=0) / weights.sum(), np.float32)
