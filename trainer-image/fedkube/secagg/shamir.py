"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Any ``threshold`` shares rebuild the secret; fewer reveal nothing about it. The field is a
Mersenne prime far above 2^256, so every 32-byte secret is a field element as it is.
Coefficients come from the operating system's entropy (``secrets``).
"""

from __future__ import annotations

import itertools
import math
import random
import secrets
from collections.abc import Iterator, Sequence

from fedkube.errors import SecureAggregationError

PRIME = (1 << 521) - 1
SECRET_BYTES = 32
SHARE_BYTES = 66  # ceil(521 / 8)


class ShareError(SecureAggregationError):
    """Shares that cannot rebuild a secret: too few, repeated or inconsistent."""


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """One share of ``secret`` for each x-coordinate in ``xs`` (distinct, at least 1)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, not {len(secret)}")
    if not 2 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be between 2 and the {len(xs)} shares")
    if len(set(xs)) != len(xs) or min(xs) < 1:
        raise ValueError("share x-coordinates must be distinct and positive")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    return {x: _evaluate(coefficients, x).to_bytes(SHARE_BYTES, "big") for x in xs}


def combine(shares: dict[int, bytes], threshold: int) -> bytes:
    """The secret behind ``shares`` (x -> y). With more than ``threshold`` shares, every extra
    one must lie on the polynomial the first ``threshold`` define, or ShareError says which
    does not (a site that sent a wrong share)."""
    if len(shares) < threshold:
        raise ShareError(f"{len(shares)} shares cannot rebuild a secret that needs {threshold}")
    points = [(x, int.from_bytes(y, "big")) for x, y in sorted(shares.items())]
    if any(y >= PRIME for _, y in points):
        raise ShareError("a share is not an element of the field")
    base, extra = points[:threshold], points[threshold:]
    for x, y in extra:
        if _interpolate(base, x) != y:
            raise ShareError(f"the share at x={x} disagrees with the others")
    value = _interpolate(base, 0)
    if value >= 1 << (8 * SECRET_BYTES):
        raise ShareError("the shares rebuild a value that is not a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


# Bases tried when some shares are wrong: every t-subset for a small roster, this many for
# a large one (each try is one interpolation per share).
MAX_BASES = 2000


def robust_combine(shares: dict[int, bytes], threshold: int) -> tuple[bytes, list[int]]:
    """The secret behind ``shares``, and the x of every share that is not on its polynomial.

    With n shares of which at most e = (n - t) // 2 are wrong, exactly one polynomial of
    degree t - 1 passes through at least n - e of them (unique decoding): it is found from a
    base of t shares that all lie on it, and the others are named wrong. With exactly t
    shares no wrong one can be seen here (the caller checks what it rebuilt, where it can);
    with more wrong shares than e, ShareError says so."""
    if len(shares) < threshold:
        raise ShareError(f"{len(shares)} shares cannot rebuild a secret that needs {threshold}")
    points = [(x, int.from_bytes(y, "big")) for x, y in sorted(shares.items())]
    if any(y >= PRIME for _, y in points):
        raise ShareError("a share is not an element of the field")
    n = len(points)
    needed = n - (n - threshold) // 2
    for base in _bases(points, threshold):
        wrong = [x for x, y in points if _interpolate(base, x) != y]
        if n - len(wrong) >= needed:
            value = _interpolate(base, 0)
            if value >= 1 << (8 * SECRET_BYTES):
                raise ShareError("the shares rebuild a value that is not a 32-byte secret")
            return value.to_bytes(SECRET_BYTES, "big"), wrong
    raise ShareError(
        f"no polynomial passes through {needed} of the {n} shares: more than "
        f"{(n - threshold) // 2} of them are wrong"
    )


def _bases(points: list[tuple[int, int]], t: int) -> Iterator[Sequence[tuple[int, int]]]:
    """Sets of t shares to interpolate from: the first t (right when every share is), then
    every t-subset when there are few, else random ones (a wrong share among the first would
    otherwise be in every subset tried)."""
    yield points[:t]
    if math.comb(len(points), t) <= MAX_BASES:
        yield from itertools.combinations(points, t)
        return
    draw = random.Random(len(points))  # reproducible: which bases were tried is no secret
    for _ in range(MAX_BASES):
        yield sorted(draw.sample(points, t))


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for c in reversed(coefficients):  # Horner
        result = (result * x + c) % PRIME
    return result


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    """Lagrange interpolation through ``points``, evaluated at ``at``."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (at - xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        total = (total + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total
