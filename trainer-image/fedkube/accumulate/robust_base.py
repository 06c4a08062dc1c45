"""Robust aggregation: the updates of a round are kept (spooled, mostly on disk) until it
closes, then combined coordinate by coordinate a block at a time, so memory stays near one
model plus (sites x block) whatever the model's size. One file per method."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np

from fedkube.accumulate.base import Accumulator, UpdateSource
from fedkube.wire.tensors import Params, TensorInfo

BLOCK_ELEMENTS = 1 << 18


class RobustAccumulator(Accumulator):
    def __init__(self, infos: Sequence[TensorInfo]) -> None:
        self.infos = list(infos)
        self.updates: list[UpdateSource] = []
        self.count = 0

    def add(self, update: UpdateSource) -> None:
        self.updates.append(update)
        self.count += 1

    def blocks(self) -> Iterator[tuple[int, int, int]]:
        for t, info in enumerate(self.infos):
            for start in range(0, info.size, BLOCK_ELEMENTS):
                yield t, start, min(BLOCK_ELEMENTS, info.size - start)

    def stacked(
        self, tensor: int, start: int, count: int, which: Sequence[int] | None = None
    ) -> np.ndarray:
        chosen = which if which is not None else range(len(self.updates))
        return np.stack(
            [
                self.updates[i].read(tensor, start, count).astype(np.float32, copy=False)
                for i in chosen
            ]
        )

    def mean(self) -> Params:
        if not self.updates:
            raise ValueError("no update to combine")
        out = {i.name: np.empty(i.size, dtype=np.float32) for i in self.infos}
        try:
            self.prepare()
            for t, start, count in self.blocks():
                out[self.infos[t].name][start : start + count] = self.combine(t, start, count)
        finally:
            self.discard()
        return {i.name: out[i.name].reshape(i.shape) for i in self.infos}

    def prepare(self) -> None:
        """A first pass over the updates, before any block is combined (multi-Krum)."""

    @abstractmethod
    def combine(self, tensor: int, start: int, count: int) -> np.ndarray:
        """The block's combined values."""

    def discard(self) -> None:
        for u in self.updates:
            u.close()
        self.updates = []
        self.count = 0
