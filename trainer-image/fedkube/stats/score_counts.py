"""A site's held-out scores as counts that add up across sites.

Under secure aggregation a site's evaluation leaves it only inside the masked sum, and under
differential privacy without it only noised: either way the aggregator learns totals, never
one site's figures. Everything a score needs is a sum over held-out records:

  rows      records scored
  correct   records whose top class is the label
  loss      cross-entropy per record, clipped to [0, LOSS_CAP], in fixed point
  positive  [AUC_BINS] positives per bin of the margin logit(p1) = z1 - z0 (binary tasks)
  negative  [AUC_BINS] negatives per bin

one block for the global model and, when the job personalises, one for the site's personal
model. The pooled AUC comes from the two histograms (Mann-Whitney, a shared bin counting
half), so it is the AUC over all sites' records, within a bin's width of the exact one.
Under masking each count travels as three 16-bit limbs (``stats.exact``), so up to 65,536
sites' counts below 2^48 add without wrapping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkube.privacy.secure_noise import discrete_gaussian
from fedkube.stats.exact import from_limbs, to_limbs
from fedkube.wire.tensors import TensorInfo

LOSS_CAP = 16.0  # cross-entropy above this (p < 1e-7 on the label) counts as this
LOSS_FRACTION_BITS = 16
AUC_BINS = 256
MARGIN_RANGE = 16.0  # margins beyond +-16 share the outermost bins
LIMBS = 3
# The tensor a masked update carries the counts in, after the model's own tensors.
SCORE_COUNTS = "__evaluation_counts__"
_HEAD = 3  # rows, correct, loss
BLOCK = _HEAD + 2 * AUC_BINS
PREFIXES = ("", "personal_")


@dataclass(frozen=True)
class ScoreLayout:
    """The counts' shape: one block per scored model (the personal one when the job
    personalises). Sites and aggregator each derive it from their own manifest."""

    personal: bool

    @property
    def blocks(self) -> int:
        return 2 if self.personal else 1

    @property
    def size(self) -> int:
        return self.blocks * BLOCK

    def masked_info(self) -> TensorInfo:
        """The counts as a masked update carries them (before masking)."""
        return TensorInfo(SCORE_COUNTS, np.dtype("<u4"), (self.size * LIMBS,))

    def empty(self) -> np.ndarray:
        return np.zeros(self.size, dtype=np.int64)


def margin_bins(margins: np.ndarray) -> np.ndarray:
    """Each margin's bin: AUC_BINS equal bins over [-MARGIN_RANGE, MARGIN_RANGE]."""
    scaled = (np.asarray(margins, dtype=np.float64) + MARGIN_RANGE) / (2 * MARGIN_RANGE)
    return np.clip(np.floor(scaled * AUC_BINS), 0, AUC_BINS - 1).astype(np.int64)


def count_block(
    labels: np.ndarray, losses: np.ndarray, correct: np.ndarray, margins: np.ndarray | None
) -> np.ndarray:
    """One model's block from its per-record scores (``margins`` for binary tasks only)."""
    block = np.zeros(BLOCK, dtype=np.int64)
    block[0] = labels.size
    block[1] = int(np.count_nonzero(correct))
    clipped = np.clip(
        np.nan_to_num(np.asarray(losses, dtype=np.float64), nan=LOSS_CAP), 0, LOSS_CAP
    )
    block[2] = int(np.rint(clipped * 2.0**LOSS_FRACTION_BITS).sum())
    if margins is not None:
        bins = margin_bins(margins)
        positive = np.asarray(labels).astype(bool)
        block[_HEAD : _HEAD + AUC_BINS] = np.bincount(bins[positive], minlength=AUC_BINS)
        block[_HEAD + AUC_BINS :] = np.bincount(bins[~positive], minlength=AUC_BINS)
    return block


def _units(size: int) -> np.ndarray:
    """What one record adds at most to each count: 1, or LOSS_CAP in fixed point for a loss."""
    scale = np.ones(size)
    scale[2::BLOCK] = LOSS_CAP * 2.0**LOSS_FRACTION_BITS
    return scale


def _sigma(size: int, noise_multiplier: float) -> float:
    return float(noise_multiplier * 2.0 * np.sqrt(size // BLOCK))


# Noise further than this many standard deviations does not happen (odds below 1e-80).
NOISE_REACH = 20.0


def count_bounds(size: int, rows: int, noise_multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    """The least and most each count of ``rows`` held-out records can be, noise included: an
    evaluation outside them was not made from that many records."""
    units = _units(size)
    reach = NOISE_REACH * _sigma(size, noise_multiplier) * units
    return -reach, rows * units + reach


def noised(counts: np.ndarray, noise_multiplier: float) -> np.ndarray:
    """The counts plus discrete Gaussian noise (from the OS's CSPRNG) calibrated to one
    held-out record: it moves rows, correct and one histogram bin by at most 1 and the loss by
    at most LOSS_CAP in each block, an L2 sensitivity of 2 per block in those units."""
    if noise_multiplier <= 0:
        return counts
    sigma = _sigma(counts.size, noise_multiplier)
    scale = _units(counts.size)
    out = counts.astype(np.int64).copy()
    for unit in np.unique(scale):
        where = scale == unit
        out[where] += discrete_gaussian(int(where.sum()), sigma * unit).astype(np.int64)
    return out


def to_masked(counts: np.ndarray) -> np.ndarray:
    """Counts as 16-bit limbs in uint32, ready to be masked (negative ones, from noise,
    wrap mod 2^48 and come back signed)."""
    return to_limbs([int(c) for c in counts], LIMBS).reshape(-1)


def from_masked(summed: np.ndarray) -> np.ndarray:
    """The summed limbs back to (signed) counts."""
    return np.array(from_limbs(np.asarray(summed).reshape(-1, LIMBS), signed=True), dtype=np.int64)


def _auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    p, n = positive.sum(), negative.sum()
    if p <= 0 or n <= 0:
        return None
    below = np.cumsum(negative) - negative  # negatives in lower bins
    wins = float((positive * (below + 0.5 * negative)).sum())
    return min(1.0, max(0.0, wins / float(p * n)))


def scores(totals: np.ndarray) -> tuple[int, dict[str, float]]:
    """The held-out records and the scores behind summed counts. Noised counts can stray
    outside what counts can be; the figures are clamped to their ranges."""
    totals = np.asarray(totals, dtype=np.int64)
    out: dict[str, float] = {}
    rows = int(totals[0])
    for prefix, start in zip(PREFIXES, range(0, totals.size, BLOCK), strict=False):
        block = totals[start : start + BLOCK]
        n = int(block[0])
        if n <= 0:
            continue
        out[f"{prefix}loss"] = max(0.0, float(block[2]) / 2.0**LOSS_FRACTION_BITS / n)
        out[f"{prefix}accuracy"] = min(1.0, max(0.0, float(block[1]) / n))
        histograms = np.clip(block[_HEAD:], 0, None)
        auc = _auc(histograms[:AUC_BINS], histograms[AUC_BINS:])
        if auc is not None:
            out[f"{prefix}auc"] = auc
    return max(0, rows), out
