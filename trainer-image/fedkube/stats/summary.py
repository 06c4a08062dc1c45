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
    slots = np.flatnonzero(counts)
    # Plain ints over the non-empty bins only: a report walks thousands of features.
    present, held = slots.tolist(), counts[slots].tolist()
    groups: list[tuple[int, int, int]] = []  # (first slot, last slot, rows)
    start, total = -1, 0
    for slot, n in zip(present, held, strict=True):
        if start < 0:
            start = slot
        total += n
        if total >= least:
            groups.append((start, slot, total))
            start, total = -1, 0
    if total and groups:
        first, _, rows = groups[-1]
        groups[-1] = (first, present[-1], rows + total)
    if not groups:
        return []
    table_low, table_high = bins.edge_table
    firsts, lasts, sizes = zip(*groups, strict=True)
    lows, highs = table_low[list(firsts)].tolist(), table_high[list(lasts)].tolist()
    return [
        Bin(low=low, high=high, count=rows)
        for low, high, rows in zip(lows, highs, sizes, strict=True)
    ]


def feature_statistics(
    totals: Totals, j: int, name: str, bins: LogBins, least: int
) -> FeatureStatistics:
    count = int(totals.present[j])
    figures = FeatureStatistics(name=name, count=count, missing=totals.rows - count)
    if count < least:
        return figures
    histogram = merged_bins(totals.bins[j], bins, least)
    found = bins.quantiles(totals.bins[j], QUANTILES)
    quantiles = {f"{q:g}": v for q, v in zip(QUANTILES, found, strict=True)}
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
