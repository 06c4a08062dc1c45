"""One site's data, ready to train: its rows through the agreed preprocessing, split into
training and held-out parts."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedkube.data.preprocess import local_preprocessing, prepare
from fedkube.data.table import SiteTable, read_site_table
from fedkube.errors import DataError
from fedkube.spec.job import JobSpec
from fedkube.spec.preprocessing import Preprocessing


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


def held_out_rows(spec: JobSpec, table: SiteTable) -> SiteTable:
    """The site's held-out rows, raw, as training left them aside (rows with empty labels
    are dropped first, as training drops or refuses them)."""
    data = spec.site(table.site).data
    assert data is not None
    labelled = table.raw[[t != "" for t in table.labels()]].reset_index(drop=True)
    if data.missing == "drop_rows":
        labelled = labelled[~labelled[table.feature_names].isna().any(axis=1)]
        labelled = labelled.reset_index(drop=True)
    order = np.arange(len(labelled))
    _, _, test, _ = split_held_out(table.site, order, order, data.held_out_fraction, spec.task.seed)
    return SiteTable(
        table.site,
        table.source,
        table.columns,
        table.feature_names,
        table.label_column,
        labelled.iloc[np.sort(test)].reset_index(drop=True),
    )


def site_data(spec: JobSpec, table: SiteTable, pre: Preprocessing) -> SiteData:
    """Prepare, check and split a site's rows."""
    data = spec.site(table.site).data
    assert data is not None
    num_features, num_classes = spec.input_shape()
    x, y = prepare(table, pre)
    if len(table.feature_names) != num_features:
        raise DataError(
            table.site,
            f"the data has {len(table.feature_names)} feature columns but the model expects "
            f"{num_features} (task.numFeatures)",
            path=table.source,
        )
    x_train, y_train, x_test, y_test = split_held_out(
        table.site, x, y, data.held_out_fraction, spec.task.seed
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


def load_site_data(
    spec: JobSpec,
    site: str,
    manifest: Path | None = None,
    preprocessing: Preprocessing | None = None,
) -> SiteData:
    """Load, check and split the named site's data. Raises DataError."""
    table = read_site_table(spec, site, manifest)
    pre = preprocessing or local_preprocessing(spec, table.feature_names)
    return site_data(spec, table, pre)
