"""One site's data, ready to train: its rows, split into training and held-out parts."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedkube.data.sources import file_rows, sklearn_rows
from fedkube.errors import DataError
from fedkube.spec.job import JobSpec
from fedkube.spec.load import resolve_path


@dataclass(frozen=True)
class SiteData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_features: int
    num_classes: int


def split_held_out(
    site: str, x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(y)
    n_test = round(n * fraction)
    if n_test < 1 or n - n_test < 1:
        raise DataError(
            site,
            f"{n} rows cannot give both a training and a held-out split with "
            f"heldOutFraction {fraction}; the site needs more rows or another fraction",
        )
    order = np.random.default_rng([seed, zlib.crc32(site.encode())]).permutation(n)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def load_site_data(spec: JobSpec, site: str, manifest: Path | None = None) -> SiteData:
    """Load, check and split the named site's data. Raises DataError."""
    try:
        data = spec.site(site).data
    except KeyError:
        raise DataError(site, "this site is not listed in spec.sites") from None
    if data is None:
        raise DataError(site, "the site is marked remote in this manifest and has no data here")
    num_features, num_classes = spec.input_shape()
    if data.sklearn is not None:
        x, y = sklearn_rows(site, data.sklearn, dataset_scaling=data.standardize == "dataset")
    else:
        assert data.file is not None
        path = resolve_path(manifest, data.file.path)
        x, y = file_rows(site, data.file, path, num_classes)
    if x.shape[1] != num_features:
        raise DataError(
            site,
            f"the data has {x.shape[1]} feature columns but the model expects {num_features} "
            "(task.numFeatures)",
        )
    x_train, y_train, x_test, y_test = split_held_out(
        site, x, y, data.held_out_fraction, spec.task.seed
    )
    if data.standardize == "site":
        # Each site scales with its own training statistics: no statistic leaves the site.
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std < 1e-8] = 1.0
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    return SiteData(
        x_train.astype(np.float32),
        y_train,
        x_test.astype(np.float32),
        y_test,
        num_features,
        num_classes,
    )
