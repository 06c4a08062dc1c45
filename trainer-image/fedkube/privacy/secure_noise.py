"""Gaussian noise for differential privacy that neither a seed nor floating point gives away.

Noise from a seeded, floating-point generator has two weaknesses: whoever learns the seed
subtracts it, and the low-order bits of a float sample leak which sample it was (Mironov,
CCS 2012). Here:

- the randomness is the operating system's CSPRNG (``os.urandom``): no seed exists;
- the noise is a *discrete* Gaussian on a grid of step ``granularity`` (Canonne, Kamath and
  Steinke, NeurIPS 2020, Algorithm 3: a discrete Laplace proposal, accepted with probability
  exp(-(|y| - sigma^2/t)^2 / (2 sigma^2))), and the value it protects is rounded to the same
  grid first: the result is an exact multiple of the step, with no low-order bits to read.

The sampler's own probabilities are computed in float64, so its distribution differs from
the ideal discrete Gaussian by about 1e-15 relative: far below any delta a job uses. A
discrete Gaussian of scale sigma (in grid steps) gives the continuous one's guarantee up to a
term that vanishes for sigma above a few steps (CKS20, Theorem 14); the grid's step is the
power of two at or below 2^-30 of the noise's standard deviation. Rounding to the grid moves
each value by at most half a step, so the L2 sensitivity grows by at most sqrt(d)/2 steps: for
ten million values, under 2e-6 of the noise's standard deviation, which moves epsilon far
below the precision it is reported with. For values beyond 2^21 standard deviations (a noise
far smaller than the values) the grid coarsens, so that every grid point stays exact in
float64.
"""

from __future__ import annotations

import math
import os

import numpy as np

# The grid's step as a share of the noise's standard deviation.
GRID_PER_STDDEV = 2.0**-30
# Samples drawn per block: bounds the sampler's memory (about 60 bytes a sample).
_BLOCK = 1 << 20


def _uniform(n: int) -> np.ndarray:
    """n draws from the open interval (0, 1), 53 random bits each, from the OS's CSPRNG."""
    raw = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return (raw.astype(np.float64) + 0.5) * 2.0**-53


def _discrete_laplace(n: int, t: int) -> np.ndarray:
    """n draws with P(y) proportional to exp(-|y|/t): the difference of two geometric draws
    (failures before a success of probability 1 - exp(-1/t)), each by the inverse CDF."""
    geometric = np.floor(-t * np.log(_uniform(2 * n)))
    difference: np.ndarray = geometric[:n] - geometric[n:]
    return difference


def discrete_gaussian(n: int, sigma: float) -> np.ndarray:
    """n integers from the discrete Gaussian N_Z(0, sigma^2), as float64 (exact: |y| < 2^53)."""
    if sigma <= 0:
        return np.zeros(n)
    t = math.floor(sigma) + 1
    out = np.empty(n)
    filled = 0
    while filled < n:
        # About half the proposals are accepted: draw a little over twice what is missing.
        need = min(n - filled, _BLOCK)
        batch = int(need * 2.3) + 16
        y = _discrete_laplace(batch, t)
        keep = _uniform(batch) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        got = y[keep][:need]
        out[filled : filled + got.size] = got
        filled += got.size
    return out


def grid_step(stddev: float) -> float:
    """The grid a noise of this standard deviation is drawn on: a power of two, at most
    GRID_PER_STDDEV of it, so that every multiple of it is exact in float64."""
    return float(2.0 ** math.floor(math.log2(stddev * GRID_PER_STDDEV)))


def add_gaussian_noise(values: np.ndarray, stddev: float) -> np.ndarray:
    """``values`` rounded to the noise's grid plus discrete Gaussian noise of (nearly exactly)
    this standard deviation, as float64; every result is an exact multiple of the grid's step.
    Casting the result to float32 afterwards is post-processing: it spends no privacy."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if stddev <= 0:
        return flat.reshape(np.shape(values))
    step = grid_step(stddev)
    largest = float(np.max(np.abs(flat))) if flat.size else 0.0
    if largest >= step * 2.0**51:
        # Values far beyond the noise (a tiny standard deviation): a coarser power-of-two grid
        # keeps every multiple exact; its rounding is still a negligible share of the noise.
        step = float(2.0 ** math.ceil(math.log2(largest / 2.0**51)))
    out = np.empty_like(flat)
    for start in range(0, flat.size, _BLOCK):
        block = flat[start : start + _BLOCK]
        out[start : start + block.size] = (
            np.rint(block / step) + discrete_gaussian(block.size, stddev / step)
        ) * step
    return out.reshape(np.shape(values))
