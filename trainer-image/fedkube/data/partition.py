"""Splitting one dataset into N simulated sites. Pure numpy and deterministic in the seed, so
every site computes the same split on its own and takes its part."""

from __future__ import annotations

import numpy as np

_ATTEMPTS = 100


def _min_size(n_rows: int, n_parts: int) -> int:
    return max(1, min(10, n_rows // (4 * n_parts)))


def iid(labels: np.ndarray, n_parts: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(p) for p in np.array_split(order, n_parts)]


def dirichlet(labels: np.ndarray, n_parts: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label skew: each class is spread over the sites by proportions drawn from Dir(alpha).

    Small alpha gives sites few classes each. Redrawn until every site has a minimum share.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    need = _min_size(len(labels), n_parts)
    for _ in range(_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(n_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= need:
            return out
    raise ValueError(
        f"could not split {len(labels)} rows into {n_parts} Dirichlet({alpha}) parts with at "
        f"least {need} rows each; use fewer partitions or a larger alpha"
    )


def quantity(labels: np.ndarray, n_parts: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Quantity skew: site sizes drawn from Dir(alpha), labels spread evenly."""
    rng = np.random.default_rng(seed)
    need = _min_size(len(labels), n_parts)
    order = rng.permutation(len(labels))
    for _ in range(_ATTEMPTS):
        shares = rng.dirichlet(np.full(n_parts, alpha))
        sizes = need + np.floor(shares * (len(labels) - need * n_parts)).astype(int)
        sizes[-1] = len(labels) - sizes[:-1].sum()
        if sizes.min() >= need:
            return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]
    raise ValueError(f"could not split {len(labels)} rows into {n_parts} parts")


def partition(
    labels: np.ndarray, scheme: str, n_parts: int, alpha: float, seed: int
) -> list[np.ndarray]:
    if scheme == "iid":
        return iid(labels, n_parts, seed)
    if scheme == "dirichlet":
        return dirichlet(labels, n_parts, alpha, seed)
    if scheme == "quantity":
        return quantity(labels, n_parts, alpha, seed)
    raise ValueError(f"unknown partitioner {scheme!r}")
