"""Where a site's rows come from: a scikit-learn dataset part, or the site's own file.

Each returns (features float32 [n, d], labels int64 [n]). Every failure is a DataError that
names the site, the file and the column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedkube.data.partition import partition
from fedkube.errors import DataError
from fedkube.spec.sites import FileSource, SklearnSource

_LOADERS = {
    "breast_cancer": "load_breast_cancer",
    "digits": "load_digits",
    "wine": "load_wine",
    "iris": "load_iris",
}


def sklearn_rows(
    site: str, source: SklearnSource, dataset_scaling: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    x, y = getattr(sklearn.datasets, _LOADERS[source.dataset])(return_X_y=True)
    if dataset_scaling:
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std < 1e-8, 1.0, std)
    try:
        parts = partition(y, source.partitioner, source.num_partitions, source.alpha, source.seed)
    except ValueError as e:
        raise DataError(site, str(e)) from None
    idx = parts[source.partition]
    return x[idx].astype(np.float32), y[idx].astype(np.int64)


def _read_table(site: str, path: Path) -> object:
    import pandas as pd

    if not path.exists():
        raise DataError(
            site, "the data file does not exist; check the path and the volume", path=str(path)
        )
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as e:  # pandas raises many types for unreadable files
        raise DataError(site, f"cannot read the file: {e}", path=str(path)) from None


def file_rows(
    site: str, source: FileSource, path: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    table = _read_table(site, path)
    assert isinstance(table, pd.DataFrame)
    columns = [str(c) for c in table.columns]
    wanted = [source.label_column, *(source.feature_columns or [])]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(
            site,
            f"column {missing[0]!r} is not in the file; it has: {', '.join(columns[:20])}"
            + (" ..." if len(columns) > 20 else ""),
            path=str(path),
        )
    features = source.feature_columns or [c for c in columns if c != source.label_column]
    if not features:
        raise DataError(site, "the file has no feature column besides the label", path=str(path))
    if len(table) == 0:
        raise DataError(site, "the file has no rows", path=str(path))
    for col in [*features, source.label_column]:
        values = pd.to_numeric(table[col], errors="coerce")
        bad = values.isna() & table[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                site,
                f"column {col!r} has a non-numeric value {table[col].iloc[row]!r} at data row "
                f"{row + 1}",
                path=str(path),
            )
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(
                site, f"column {col!r} has an empty value at data row {row + 1}", path=str(path)
            )
    x = table[features].to_numpy(dtype=np.float32)
    y_raw = table[source.label_column].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError(site, "a feature column holds an infinite value", path=str(path))
    bad_label = (y_raw != np.round(y_raw)) | (y_raw < 0) | (y_raw >= num_classes)
    if bad_label.any():
        row = int(np.flatnonzero(bad_label)[0])
        raise DataError(
            site,
            f"column {source.label_column!r} must hold class numbers 0..{num_classes - 1} "
            f"(task.numClasses); data row {row + 1} has {y_raw[row]:g}",
            path=str(path),
        )
    return x, y_raw.astype(np.int64)
