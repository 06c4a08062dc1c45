"""The preprocessing the sites agree from the federated totals: the pooled mean and standard
deviation to scale by, the pooled mean or median to fill empty values with."""

from __future__ import annotations

from fedkube.errors import JobFailed
from fedkube.spec.job import JobSpec
from fedkube.spec.preprocessing import Preprocessing
from fedkube.stats.layout import Totals
from fedkube.stats.sketch import LogBins

TINY_STD = 1e-8


def agree_preprocessing(
    spec: JobSpec, totals: Totals, features: list[str], labels: list[str], bins: LogBins
) -> Preprocessing:
    data = spec.data_settings()
    assert data is not None
    empty = [features[j] for j in range(len(features)) if totals.present[j] == 0]
    if empty and (data.standardize == "federated" or data.missing.startswith("impute")):
        raise JobFailed(
            f"column {empty[0]!r} has no value at any site; the federated statistics cannot "
            "scale or fill it"
        )
    center = scale = fill = None
    means = [totals.mean(j) or 0.0 for j in range(len(features))]
    if data.standardize == "federated":
        center = means
        stds = [totals.std(j) or 0.0 for j in range(len(features))]
        scale = [s if s >= TINY_STD else 1.0 for s in stds]
    if data.missing == "impute_mean":
        fill = means
    elif data.missing == "impute_median":
        fill = [bins.quantile(totals.bins[j], 0.5) or 0.0 for j in range(len(features))]
    return Preprocessing(
        features=features,
        standardize=data.standardize,
        center=center,
        scale=scale,
        missing=data.missing,
        fill=fill,
        labels=labels,
        label_column=spec.label_column(),
    )
