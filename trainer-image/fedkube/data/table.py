"""A site's rows as they are on disk, before any preprocessing: its columns and their types
(what the schema check compares), the feature values with NaN where one is missing, and the
label values as text. Every failure is a DataError naming the site, the file and the column."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedkube.data.partition import partition
from fedkube.data.sklearn_datasets import load_dataset
from fedkube.errors import DataError
from fedkube.spec.job import JobSpec
from fedkube.spec.load import resolve_path
from fedkube.spec.sites import FileSource, SklearnSource

LARGEST_VALUE = float(2**40)  # the federated statistics' exact sums are sized for this


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # number | integer | boolean | string


def column_type(values: Any) -> str:
    kind = values.dtype.kind
    return {"i": "integer", "u": "integer", "f": "number", "b": "boolean"}.get(kind, "string")


def label_text(value: object) -> str:
    """A label as the vocabulary spells it: 1 and 1.0 are both "1"; empty is ""."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer, np.bool_)):
        return str(int(value))
    return str(value).strip()


@dataclass
class SiteTable:
    site: str
    source: str  # the file, or the sklearn dataset, for messages
    columns: list[Column]
    feature_names: list[str]
    label_column: str
    raw: Any  # a pandas DataFrame holding every column

    def schema_problem(self) -> str | None:
        """What stops the features from being read (a column missing or not numeric)."""
        types = {c.name: c.type for c in self.columns}
        for name in [*self.feature_names, self.label_column]:
            if name not in types:
                listed = ", ".join(list(types)[:20]) + (" ..." if len(types) > 20 else "")
                return f"column {name!r} is not in the file; it has: {listed}"
        for name in self.feature_names:
            if types[name] in ("string", "boolean"):
                return f"column {name!r} has a non-numeric value {self._first_text(name)}"
        return None

    def _first_text(self, name: str) -> str:
        import pandas as pd

        values = self.raw[name]
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        if not bad.any():
            return "(a boolean column)"
        row = int(np.flatnonzero(bad.to_numpy())[0])
        return f"{values.iloc[row]!r} at data row {row + 1}"

    def features(self) -> np.ndarray:
        """float64 [rows, features], NaN where a value is empty."""
        problem = self.schema_problem()
        if problem is not None:
            raise DataError(self.site, problem, path=self.source)
        x: np.ndarray = self.raw[self.feature_names].to_numpy(dtype=np.float64)
        finite = np.isfinite(x) | np.isnan(x)
        if not finite.all():
            row, col = (int(v[0]) for v in np.nonzero(~finite))
            raise DataError(
                self.site,
                f"column {self.feature_names[col]!r} has an infinite value at data row {row + 1}",
                path=self.source,
            )
        large = np.abs(np.nan_to_num(x)) >= LARGEST_VALUE
        if large.any():
            row, col = (int(v[0]) for v in np.nonzero(large))
            raise DataError(
                self.site,
                f"column {self.feature_names[col]!r} has {x[row, col]:g} at data row {row + 1}, "
                f"beyond +-{LARGEST_VALUE:g}; rescale the column",
                path=self.source,
            )
        return x

    def labels(self) -> list[str]:
        return [label_text(v) for v in self.raw[self.label_column].tolist()]

    @property
    def rows(self) -> int:
        return len(self.raw)


def _read_frame(site: str, path: Path) -> Any:
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


def file_table(site: str, source: FileSource, path: Path, agreed: list[str] | None) -> SiteTable:
    frame = _read_frame(site, path)
    if len(frame) == 0:
        raise DataError(site, "the file has no rows", path=str(path))
    frame.columns = [str(c) for c in frame.columns]
    columns = [Column(str(c), column_type(frame[c])) for c in frame.columns]
    names = agreed or source.feature_columns
    features = names or [c.name for c in columns if c.name != source.label_column]
    if not features:
        raise DataError(site, "the file has no feature column besides the label", path=str(path))
    return SiteTable(site, str(path), columns, list(features), source.label_column, frame)


def sklearn_table(site: str, source: SklearnSource) -> SiteTable:
    import pandas as pd

    bunch = load_dataset(source.dataset)
    x, y = bunch.x, bunch.y
    try:
        parts = partition(y, source.partitioner, source.num_partitions, source.alpha, source.seed)
    except ValueError as e:
        raise DataError(site, str(e)) from None
    idx = parts[source.partition]
    names = [str(n) for n in bunch.feature_names]
    frame = pd.DataFrame(x[idx].astype(np.float64), columns=names)
    frame["target"] = y[idx].astype(np.int64)
    columns = [Column(n, "number") for n in names] + [Column("target", "integer")]
    return SiteTable(site, f"sklearn:{source.dataset}", columns, names, "target", frame)


def sklearn_feature_names(source: SklearnSource) -> list[str]:
    return list(load_dataset(source.dataset).feature_names)


def dataset_scaling(source: SklearnSource) -> tuple[list[float], list[float]]:
    """The whole sklearn dataset's mean and standard deviation (standardize: dataset)."""
    x = load_dataset(source.dataset).x
    std = x.std(axis=0)
    return [float(v) for v in x.mean(axis=0)], [float(v) if v >= 1e-8 else 1.0 for v in std]


def confined_path(data_dir: Path, value: str, site: str, field: str) -> Path:
    """``value`` inside the site's data folder (relative paths are relative to it); a path
    that leads out of it (absolute elsewhere, ``..``, a link) is refused."""
    root = data_dir.resolve()
    candidate = Path(value)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise DataError(
            site,
            f"{field} {value!r} leads outside this site's data volume ({root}); give a path "
            "inside it, relative to it",
            path=value,
        )
    return resolved


def read_site_table(
    spec: JobSpec, site: str, manifest: Path | None = None, data_dir: Path | None = None
) -> SiteTable:
    """The named site's rows as its manifest points to them, inside ``data_dir`` when the
    site confines its data to a folder (a trainer pod: its data volume). Raises DataError."""
    try:
        data = spec.site(site).data
    except KeyError:
        raise DataError(site, "this site is not listed in spec.sites") from None
    if data is None:
        raise DataError(site, "the site is marked remote in this manifest and has no data here")
    if data.sklearn is not None:
        return sklearn_table(site, data.sklearn)
    assert data.file is not None
    agreed = [f.name for f in spec.task.features] if spec.task.features else None
    if data_dir is not None:
        index = next(i for i, s in enumerate(spec.sites) if s.name == site)
        field = f"spec.sites[{index}].data.file.path"
        path = confined_path(data_dir, data.file.path, site, field)
    else:
        path = resolve_path(manifest, data.file.path)
    return file_table(site, data.file, path, agreed)
