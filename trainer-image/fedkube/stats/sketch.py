"""Bins every site agrees without seeing anyone's data: edges that grow geometrically by
gamma = (1+a)/(1-a) from a tiny magnitude to a huge one, on both sides of zero (the
DDSketch layout, Masson et al. 2019). Bin counts add up across sites, so the sum of the
sites' counts (plain or under secure aggregation) is the pooled data's histogram, and any
quantile read from it is within relative error a of a value in the data's bin."""

from __future__ import annotations

import functools
import math

import numpy as np

# Magnitudes below SMALLEST count as zero; at or above LARGEST a value is refused, so the
# exact sums (``exact.py``) have a bound.
SMALLEST = 1e-9
LARGEST = float(2**40)


class LogBins:
    def __init__(self, relative_accuracy: float) -> None:
        self.relative_accuracy = relative_accuracy
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._ln_gamma = math.log(self.gamma)
        self._lo = math.floor(math.log(SMALLEST) / self._ln_gamma)
        hi = math.ceil(math.log(LARGEST) / self._ln_gamma)
        self.per_side = hi - self._lo + 1
        self.size = 2 * self.per_side + 1  # negatives (most negative first), zero, positives

    def slots(self, values: np.ndarray) -> np.ndarray:
        """Each finite value's bin (int64), ascending with the value."""
        magnitude = np.abs(values)
        tiny = magnitude < SMALLEST
        with np.errstate(divide="ignore"):
            k = np.ceil(np.log(np.where(tiny, 1.0, magnitude)) / self._ln_gamma) - self._lo
        k = np.clip(k, 0, self.per_side - 1).astype(np.int64)
        zero = self.per_side
        slots = np.where(values > 0, zero + 1 + k, zero - 1 - k)
        return np.where(tiny, zero, slots)

    def edges(self, slot: int) -> tuple[float, float]:
        """The bin's (low, high) edges."""
        zero = self.per_side
        if slot == zero:
            return 0.0, 0.0  # magnitudes below SMALLEST count as zero
        k = abs(slot - zero) - 1
        low, high = self.gamma ** (self._lo + k - 1), self.gamma ** (self._lo + k)
        low = max(low, SMALLEST)
        return (low, high) if slot > zero else (-high, -low)

    @functools.cached_property
    def edge_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every bin's (low, high) edges as two arrays, made once from ``edges`` (so the
        same floats), for reports that look up thousands of them."""
        lows, highs = zip(*(self.edges(slot) for slot in range(self.size)), strict=True)
        return np.asarray(lows), np.asarray(highs)

    def value(self, slot: int) -> float:
        """The bin's representative: within relative error a of every value in it."""
        zero = self.per_side
        if slot == zero:
            return 0.0
        k = abs(slot - zero) - 1
        v = 2 * self.gamma ** (self._lo + k) / (self.gamma + 1)
        return v if slot > zero else -v

    def quantile(self, counts: np.ndarray, q: float) -> float | None:
        """The q-quantile (numpy's linear definition, rank q(n-1)) read from bin counts."""
        return self.quantiles(counts, (q,))[0]

    def quantiles(self, counts: np.ndarray, qs: tuple[float, ...]) -> list[float | None]:
        """Several quantiles from one pass over the counts (a report asks five of each of
        thousands of features)."""
        cumulative = np.cumsum(counts)
        n = int(cumulative[-1]) if len(cumulative) else 0
        if n == 0:
            return [None] * len(qs)
        ranks = np.asarray([q * (n - 1) for q in qs])
        slots = np.minimum(np.searchsorted(cumulative, ranks, side="right"), len(counts) - 1)
        return [self.value(int(slot)) for slot in slots]
