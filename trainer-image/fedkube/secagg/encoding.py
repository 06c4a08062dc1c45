"""Fixed-point encoding of weighted updates into the ring of integers mod 2^32.

Masks only cancel exactly in integer arithmetic, so a site's float update becomes integers:
each value is clipped to [-clip_range, clip_range], multiplied by the site's weight (its share
of the roster's samples, so the weights sum to at most 1) and scaled by 2^30 / clip_range.
The sum over any subset of sites then stays within +-2^30 plus the rounding, inside a signed
32-bit range, so it decodes without wrapping. A masked value is as many bytes as a float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCALE_BITS = 30
# Masks and sums are made this many values at a time, so memory stays a chunk, not a model.
CHUNK_VALUES = 1 << 18


@dataclass(frozen=True)
class FixedPoint:
    clip_range: float

    @property
    def scale(self) -> float:
        return float(1 << SCALE_BITS) / self.clip_range

    def encode(self, values: np.ndarray, weight: float) -> tuple[np.ndarray, int]:
        """(uint32 values, how many were clipped). ``weight`` is at most 1, so every value
        fits a signed 32-bit integer before it wraps into the ring."""
        x = np.array(values, dtype=np.float64)  # a copy, worked on in place
        bound = self.clip_range
        outside = int(np.count_nonzero(x > bound)) + int(np.count_nonzero(x < -bound))
        np.clip(x, -bound, bound, out=x)
        x *= weight * self.scale
        np.rint(x, out=x)
        return x.astype(np.int32).view(np.uint32), outside  # negative values wrap

    def decode(self, sums: np.ndarray) -> np.ndarray:
        """The float64 sum behind a uint32 fixed-point sum."""
        return sums.view(np.int32).astype(np.float64) / self.scale


def offsets(sizes: Sequence[int]) -> list[int]:
    """Where each tensor starts in the one flat vector the masks cover."""
    return [0, *itertools.accumulate(sizes)][: len(sizes)]
