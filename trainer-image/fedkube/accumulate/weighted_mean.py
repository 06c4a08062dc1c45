"""The mean: each update folded into running sums the moment it is whole."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fedkube.accumulate.base import Accumulator, SplitSource, UpdateSource
from fedkube.wire.tensors import Params, TensorInfo

# Values converted, and float64 pages released, at a time (4 MiB of sums; page-aligned).
RELEASE_BLOCK = 1 << 19
# Values folded at a time: 256 KiB of float64 scratch, which a CPU's L2 cache holds.
FOLD_BLOCK = 1 << 15
# Threads one update's fold is split over (it is memory-bound: a few cores saturate it).
# Otherwise an aggregator whose sites all finish uploading at once folds them one by one
# on one core, the others idle, at the end of every round.
FOLD_THREADS = max(1, min(4, os.cpu_count() or 1))
# The thread that adds an update folds its first run itself.
_FOLD_HELPERS = ThreadPoolExecutor(
    max_workers=max(1, FOLD_THREADS - 1), thread_name_prefix="fedkube-fold"
)


class WeightedMean(Accumulator):
    """Running sum of weighted updates, folded chunk by chunk: about one model's size of
    memory, whatever the number of sites.

    The sums are float64: a float32 value times a sample count is exact in float64, and the
    sums of a round's few such products round there, far below float32's precision. So the
    float32 mean does not depend on the order the updates arrived in (which no transport
    fixes), and a job gives the same model over gRPC and in process.

    Float64 sums are twice the model; with the float32 mean beside them they would be three
    times. So each sum lives in its own anonymous mapping, and the mean is made a block at a
    time, each block's float64 pages handed back to the OS as soon as it is converted: the
    round's peak stays near twice the model."""

    def __init__(self, infos: Sequence[TensorInfo]) -> None:
        self.infos = list(infos)
        # Allocated on first use, so an idle aggregator holds only the global model.
        self._sums: list[np.ndarray] | None = None
        self._maps: list[mmap.mmap] = []
        self._scratch: np.ndarray | None = None
        self.total_weight = 0.0
        self.count = 0

    def _buffers(self) -> list[np.ndarray]:
        if self._sums is None:
            self._maps = [mmap.mmap(-1, max(1, i.size) * 8) for i in self.infos]  # zeroed
            self._sums = [
                np.frombuffer(m, dtype=np.float64, count=i.size)
                for m, i in zip(self._maps, self.infos, strict=True)
            ]
        return self._sums

    def add(self, update: UpdateSource) -> None:
        try:
            runs = update.runs(FOLD_THREADS) if isinstance(update, SplitSource) else []
            runs = runs or [update.pieces()]
            self._buffers()  # made here, before any helper shares them
            helpers = [_FOLD_HELPERS.submit(self._fold_run, r, update.weight) for r in runs[1:]]
            self._fold_run(runs[0], update.weight)
            for helper in helpers:
                helper.result()
            self.commit(update.weight)
        finally:
            update.close()

    def _fold_run(self, run: Iterator[tuple[int, int, np.ndarray]], weight: float) -> None:
        """One run of an update's pieces: its elements are no other run's, so runs fold on
        threads of their own into the same sums, bit for bit as in one."""
        scratch = np.empty(FOLD_BLOCK, dtype=np.float64)
        for tensor, start, values in run:
            self.fold(tensor, start, values, weight, scratch)

    def fold(
        self,
        tensor: int,
        start: int,
        values: np.ndarray,
        weight: float,
        scratch_block: np.ndarray | None = None,
    ) -> None:
        """``sums[tensor][start:] += values * weight``, in float64, a block at a time through
        one small scratch buffer that stays in cache: a third less time than whole-chunk
        temporaries, and bit for bit the same sums."""
        target = self._buffers()[tensor][start : start + values.size]
        if scratch_block is None:
            if self._scratch is None:
                self._scratch = np.empty(FOLD_BLOCK, dtype=np.float64)
            scratch_block = self._scratch
        for at in range(0, values.size, FOLD_BLOCK):
            n = min(FOLD_BLOCK, values.size - at)
            scratch = scratch_block[:n]
            np.multiply(values[at : at + n], weight, out=scratch)
            np.add(target[at : at + n], scratch, out=target[at : at + n])

    def commit(self, weight: float) -> None:
        """One update has been folded whole."""
        self.total_weight += weight
        self.count += 1

    def mean(self) -> Params:
        if self.count == 0 or self.total_weight <= 0:
            raise ValueError("no update to average")
        sums, maps = self._buffers(), self._maps
        out: Params = {}
        for info, s, m in zip(self.infos, sums, maps, strict=True):
            # np.empty maps pages lazily: they become resident as the blocks fill them.
            mean = np.empty(info.size, dtype=info.dtype)
            for start in range(0, info.size, RELEASE_BLOCK):
                end = min(info.size, start + RELEASE_BLOCK)
                np.divide(s[start:end], self.total_weight, out=mean[start:end], casting="unsafe")
                m.madvise(mmap.MADV_DONTNEED, start * 8, (end - start) * 8)
            out[info.name] = mean.reshape(info.shape)
        # The mappings go with the last reference to them (the float64 views above).
        self._sums, self._maps = None, []
        return out
