"""Exact sums across sites in a ring of 32-bit integers.

Secure aggregation adds uint32 values mod 2^32. A feature's sum of values and sum of squares
need far more bits than that, so each is a big integer cut into 16-bit limbs, one limb per
uint32 slot: up to 65,536 sites' limbs add without wrapping, and the totals rebuild the exact
sums. Values are scaled by 2^82 first: a float64 of magnitude 2^-30 (about 1e-9) or more has
no bit below 2^-82, so the scaled values are integers and the sums are the exact sums of the
sites' float64 values. Means and standard deviations are then correctly rounded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FRACTION_BITS = 82
LIMB_BITS = 16
SUM_LIMBS = 11  # signed 176 bits: |x| < 2^40 scaled by 2^82, times up to 2^40 rows
SQUARE_LIMBS = 18  # unsigned 288 bits: squares < 2^244, times up to 2^40 rows
MAX_SITES = 1 << (32 - LIMB_BITS)


def fixed_point(values: np.ndarray) -> list[int]:
    """float64 values as Python integers scaled by 2^82 (exact: a power-of-two scaling of a
    float64 is exact, and the rounding only drops bits below 2^-82)."""
    return [int(v) for v in np.rint(np.asarray(values, dtype=np.float64) * 2.0**FRACTION_BITS)]


def to_limbs(numbers: Sequence[int], limbs: int) -> np.ndarray:
    """Each integer mod 2^(16 limbs), as `limbs` 16-bit pieces (uint32, least significant
    first): shape [len(numbers), limbs]."""
    modulus, mask = 1 << (LIMB_BITS * limbs), (1 << LIMB_BITS) - 1
    out = np.zeros((len(numbers), limbs), dtype=np.uint32)
    for i, n in enumerate(numbers):
        n %= modulus
        for j in range(limbs):
            out[i, j] = (n >> (LIMB_BITS * j)) & mask
    return out


def from_limbs(sums: np.ndarray, signed: bool) -> list[int]:
    """The integers behind summed limbs (uint32 [n, limbs], each a sum of 16-bit pieces)."""
    limbs = sums.shape[1]
    modulus = 1 << (LIMB_BITS * limbs)
    out = []
    for row in sums:
        n = sum(int(v) << (LIMB_BITS * j) for j, v in enumerate(row)) % modulus
        if signed and n >= modulus // 2:
            n -= modulus
        out.append(n)
    return out
