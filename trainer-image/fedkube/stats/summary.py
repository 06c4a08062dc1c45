"""Totals into the report's figures, with the privacy guards applied: bins below the minimum
count are merged with their neighbours (so min and max are bin edges, never one record's
value), label counts below it are withheld, and a feature with too few values shows counts
only."""

from __future__ import annotations

import numpy as np

from fedkube.spec.statistics import (
    QUANTILES,
    Bin,
    FeatureStatistics,
    LabelCount,
    StatisticsBlock,
)
from fedkube.stats.layout import Totals
from fedkube.stats.sketch import LogBins


def merged_bins(counts: np.ndarray, bins: LogBins, least: int) -> list[Bin]:
    """Adjacent non-empty bins joined until each holds at least ``least`` rows; a short
    remainder joins the last bin. Empty when all the rows together are fewer."""
    out: list[Bin] = []
    start, total = -1, 0
    for slot in np.flatnonzero(counts):
        if start < 0:
            start = int(slot)
        total += int(counts[slot])
        if total >= least:
            out.append(Bin(low=bins.edges(start)[0], high=bins.edges(int(slot))[1], count=total))
            start, total = -1, 0
    if total and out:
        last = out[-1]
        high = bins.edges(int(np.flatnonzero(counts)[-1]))[1]
        out[-1] = Bin(low=last.low, high=high, count=last.count + total)
    return out


def feature_statistics(
    totals: Totals, j: int, name: str, bins: LogBins, least: int
) -> FeatureStatistics:
    count = int(totals.present[j])
    figures = FeatureStatistics(name=name, count=count, missing=totals.rows - count)
    if count < least:
        return figures
    histogram = merged_bins(totals.bins[j], bins, least)
    quantiles = {f"{q:g}": bins.quantile(totals.bins[j], q) for q in QUANTILES}
    return figures.model_copy(
        update={
            "mean": totals.mean(j),
            "std": totals.std(j),
            "min": histogram[0].low,
            "max": histogram[-1].high,
            "quantiles": {k: v for k, v in quantiles.items() if v is not None},
            "histogram": histogram,
        }
    )


def block(
    totals: Totals, features: list[str], labels: list[str], bins: LogBins, least: int
) -> StatisticsBlock:
    return StatisticsBlock(
        rows=totals.rows,
        features=[
            feature_statistics(totals, j, name, bins, least) for j, name in enumerate(features)
        ],
        labels=[
            LabelCount(label=label, count=int(n) if n == 0 or n >= least else None)
            for label, n in zip(labels, totals.labels, strict=True)
        ],
    )
