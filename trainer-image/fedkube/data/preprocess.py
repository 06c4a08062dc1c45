"""A site's raw rows through the agreed preprocessing: empty values refused, filled or
dropped, labels mapped to class numbers, features scaled. The same function serves training
and `fedkube predict`, so new rows are prepared exactly as the training rows were."""

from __future__ import annotations

import numpy as np

from fedkube.data.table import SiteTable, dataset_scaling, sklearn_feature_names
from fedkube.errors import DataError
from fedkube.spec.job import JobSpec
from fedkube.spec.preprocessing import Preprocessing


def local_preprocessing(spec: JobSpec, features: list[str]) -> Preprocessing:
    """The preprocessing a job gets from its manifest alone (no statistics round)."""
    data = spec.data_settings()
    assert data is not None, "a job with no local site has no preprocessing here"
    if data.standardize == "federated" or data.missing.startswith("impute"):
        raise DataError(
            "",
            f"standardize: {data.standardize} with missing: {data.missing} needs the federated "
            "statistics round; run the job (fedkube run, or the aggregator)",
        )
    center = scale = None
    if data.standardize == "dataset" and data.sklearn is not None:
        center, scale = dataset_scaling(data.sklearn)
    _, classes = spec.input_shape()
    return Preprocessing(
        features=features,
        standardize=data.standardize,
        center=center,
        scale=scale,
        missing=data.missing,
        labels=spec.task.labels or [str(i) for i in range(classes)],
        label_column=spec.label_column(),
    )


def manifest_preprocessing(spec: JobSpec) -> Preprocessing | None:
    """The preprocessing of a job without round 0, for its output folder; None when no site
    of this manifest has data here, or when the preprocessing needs round 0."""
    data = spec.data_settings()
    if data is None or spec.needs_statistics():
        return None
    if spec.task.features:
        names = [f.name for f in spec.task.features]
    elif data.sklearn is not None:
        names = sklearn_feature_names(data.sklearn)
    else:
        return None
    return local_preprocessing(spec, names)


def prepare_features(
    x: np.ndarray, pre: Preprocessing, site: str, source: str, keep: np.ndarray
) -> np.ndarray:
    """Scaled float64 features of the ``keep`` rows, empty values handled as agreed."""
    x = x[keep]
    empty = np.isnan(x)
    if empty.any():
        if pre.missing == "refuse":
            row, col = (int(v[0]) for v in np.nonzero(empty))
            raise DataError(
                site,
                f"column {pre.features[col]!r} has an empty value at data row "
                f"{int(np.flatnonzero(keep)[row]) + 1}; fill it, or set data.missing to "
                "impute_mean, impute_median or drop_rows",
                path=source,
            )
        assert pre.fill is not None  # drop_rows removed these rows already
        x = np.where(empty, np.asarray(pre.fill)[None, :], x)
    if pre.center is not None and pre.scale is not None:
        x = (x - np.asarray(pre.center)) / np.asarray(pre.scale)
    return x


def prepare(table: SiteTable, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 [n, F], class numbers int64 [n]) of the rows that remain."""
    if table.feature_names != pre.features:
        raise DataError(
            table.site,
            f"the features are {table.feature_names[:5]}... but the model was trained on "
            f"{pre.features[:5]}...; they must match in name and order",
            path=table.source,
        )
    x = table.features()
    texts = table.labels()
    keep = np.ones(len(texts), dtype=bool)
    unlabelled = np.array([t == "" for t in texts])
    if unlabelled.any() and pre.missing == "refuse":
        row = int(np.flatnonzero(unlabelled)[0])
        raise DataError(
            table.site,
            f"column {table.label_column!r} has an empty label at data row {row + 1}",
            path=table.source,
        )
    keep &= ~unlabelled
    if pre.missing == "drop_rows":
        keep &= ~np.isnan(x).any(axis=1)
    if not keep.any():
        raise DataError(
            table.site, "no row is left once empty values are dropped", path=table.source
        )
    index = {label: i for i, label in enumerate(pre.labels)}
    y = np.empty(int(keep.sum()), dtype=np.int64)
    for out, row in enumerate(np.flatnonzero(keep).tolist()):
        label = texts[row]
        if label not in index:
            raise DataError(
                table.site,
                f"column {table.label_column!r} has label {label!r} at data row {row + 1}, "
                f"which is not one of the job's labels {pre.labels[:10]}",
                path=table.source,
            )
        y[out] = index[label]
    features = prepare_features(x, pre, table.site, table.source, keep)
    return features.astype(np.float32), y
