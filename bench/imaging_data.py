"""Images the benchmarks make (nothing is downloaded): ``classes`` kinds of 3-channel square
images, each class a smooth pattern of its own (oriented stripes of a class-specific
frequency and colour) under per-image shifts, contrast and noise, so that a CNN has
something to learn and a linear model less. Written per site as Parquet, one column per
pixel value (channel, row, column order) and a label column."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def images(
    rows: int, classes: int = 10, side: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.empty((rows, 3, side, side), np.float32)
    for k in range(classes):
        angle = np.pi * k / classes
        freq = 2 + k % 4
        colour = np.array([np.cos(angle), np.sin(angle), np.cos(2 * angle)], np.float32)
        picked = np.flatnonzero(labels == k)
        phase = rng.uniform(0, 2 * np.pi, len(picked))[:, None, None]
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        contrast = rng.uniform(0.5, 1.5, len(picked))[:, None, None, None]
        out[picked] = contrast * colour[None, :, None, None] * wave[:, None]
    out += rng.normal(0, 0.8, out.shape).astype(np.float32)
    return out.reshape(rows, -1), labels


def write_site_files(
    folder: Path, sites: int, rows: int, side: int = 32, seed: int = 0
) -> list[Path]:
    """One Parquet file per site (``site-<i>.parquet``): ``rows`` images each, label ``y``."""
    import pandas as pd

    paths = []
    for i in range(sites):
        x, y = images(rows, side=side, seed=seed * 1000 + i)
        frame = pd.DataFrame(x, columns=[f"p{j}" for j in range(x.shape[1])])
        frame["y"] = y
        path = folder / f"site-{i}.parquet"
        frame.to_parquet(path, index=False)
        paths.append(path)
    return paths
