"""What a site sends in the statistics round: counts and exact sums, all uint32 so the same
tensors add up in the clear or under secure aggregation's masks.

  rows     [1]            the site's rows
  present  [F]            rows with a value, per feature
  labels   [L]            rows per label (in the order the round agreed)
  bins     [F, B]         rows per agreed bin (``sketch.LogBins``), per feature
  sums     [F, 11]        sum of values, fixed point, in 16-bit limbs (``exact.py``)
  squares  [F, 18]        sum of squared values, likewise
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from fedkube.stats.exact import (
    FRACTION_BITS,
    SQUARE_LIMBS,
    SUM_LIMBS,
    fixed_point,
    from_limbs,
    to_limbs,
)
from fedkube.stats.sketch import LogBins
from fedkube.wire.tensors import Params, TensorInfo

U32 = np.dtype("<u4")


@dataclass(frozen=True)
class Totals:
    """Decoded counts and sums, for one site or summed over several."""

    rows: int
    present: np.ndarray  # int64 [F]
    labels: np.ndarray  # int64 [L]
    bins: np.ndarray  # int64 [F, B]
    sums: list[int]  # per feature, scaled by 2^FRACTION_BITS
    squares: list[int]  # per feature, scaled by 2^(2 FRACTION_BITS)

    def mean(self, feature: int) -> float | None:
        n = int(self.present[feature])
        if n == 0:
            return None
        return float(Fraction(self.sums[feature], n << FRACTION_BITS))

    def std(self, feature: int) -> float | None:
        """Population standard deviation, from exact integers: no cancellation."""
        n = int(self.present[feature])
        if n == 0:
            return None
        s, sq = self.sums[feature], self.squares[feature]
        variance = Fraction(n * sq - s * s, (n * n) << (2 * FRACTION_BITS))
        return math.sqrt(max(0.0, float(variance)))


class StatsLayout:
    def __init__(self, num_features: int, num_labels: int, bins: LogBins) -> None:
        self.num_features = num_features
        self.num_labels = num_labels
        self.bins = bins

    def infos(self) -> list[TensorInfo]:
        f = self.num_features
        return [
            TensorInfo("rows", U32, (1,)),
            TensorInfo("present", U32, (f,)),
            TensorInfo("labels", U32, (self.num_labels,)),
            TensorInfo("bins", U32, (f, self.bins.size)),
            TensorInfo("sums", U32, (f, SUM_LIMBS)),
            TensorInfo("squares", U32, (f, SQUARE_LIMBS)),
        ]

    def encode(self, x: np.ndarray, label_index: np.ndarray) -> Params:
        """One site's tensors. ``x``: float64 [n, F], NaN where a value is missing, every other
        value finite and below ``sketch.LARGEST`` in magnitude; ``label_index``: [n], the
        row's label position in the agreed order, -1 for none."""
        n, f = x.shape
        present = ~np.isnan(x)
        bins = np.zeros((f, self.bins.size), dtype=np.uint32)
        sums, squares = [], []
        for j in range(f):
            values = x[present[:, j], j]
            np.add.at(bins[j], self.bins.slots(values), 1)
            q = fixed_point(values)
            sums.append(sum(q))
            squares.append(sum(v * v for v in q))
        known = label_index[label_index >= 0]
        return {
            "rows": np.array([n], dtype=np.uint32),
            "present": present.sum(axis=0).astype(np.uint32),
            "labels": np.bincount(known, minlength=self.num_labels).astype(np.uint32),
            "bins": bins,
            "sums": to_limbs(sums, SUM_LIMBS),
            "squares": to_limbs(squares, SQUARE_LIMBS),
        }

    def decode(self, tensors: Params) -> Totals:
        """The totals behind one site's tensors or a sum of several sites' (mod 2^32)."""
        shaped = {
            i.name: np.asarray(tensors[i.name]).view(np.uint32).reshape(i.shape)
            for i in self.infos()
        }
        return Totals(
            rows=int(shaped["rows"][0]),
            present=shaped["present"].astype(np.int64),
            labels=shaped["labels"].astype(np.int64),
            bins=shaped["bins"].astype(np.int64),
            sums=from_limbs(shaped["sums"], signed=True),
            squares=from_limbs(shaped["squares"], signed=False),
        )


def add(a: Params, b: Params) -> Params:
    """Two sites' tensors summed as secure aggregation sums them: uint32, mod 2^32."""
    return {k: (a[k].astype(np.uint32) + b[k].astype(np.uint32)) for k in a}
