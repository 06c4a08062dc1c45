"""What a site tells round 0: its columns and label values (SCHEMA), then its counts and exact
sums (STATISTICS), computed from its rows as they are on disk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkube.data.table import Column, SiteTable
from fedkube.errors import DataError
from fedkube.spec.job import JobSpec
from fedkube.stats.layout import StatsLayout
from fedkube.stats.schema import label_order
from fedkube.stats.sketch import LogBins
from fedkube.wire.tensors import Params


def agreed_labels(spec: JobSpec) -> list[str]:
    """The label vocabulary every site knows from the manifest alone."""
    _, classes = spec.input_shape()
    return list(spec.task.labels or [str(i) for i in range(classes)])


def stats_layout(spec: JobSpec) -> StatsLayout:
    features, classes = spec.input_shape()
    return StatsLayout(features, classes, LogBins(spec.statistics.relative_accuracy))


@dataclass(frozen=True)
class SiteSchemaReport:
    columns: list[Column]
    labels: list[str]  # empty under secure aggregation: the vocabulary is the manifest's


def site_schema(table: SiteTable, secure: bool) -> SiteSchemaReport:
    labels = [] if secure else label_order({t for t in table.labels() if t})
    return SiteSchemaReport(table.columns, labels)


def site_statistics(spec: JobSpec, table: SiteTable, secure: bool) -> Params:
    """The site's round-0 tensors. Labels are counted in the manifest's vocabulary under
    secure aggregation (the sum must line up), else in the order of the site's own schema."""
    texts = table.labels()
    if secure:
        order = agreed_labels(spec)
        strange = sorted({t for t in texts if t and t not in order})
        if strange:
            raise DataError(
                table.site,
                f"labels {strange[:5]} are not among {order[:10]}; under secure aggregation "
                "the labels must be agreed in task.labels (or be the class numbers "
                "0..numClasses-1)",
                path=table.source,
            )
    else:
        order = site_schema(table, secure=False).labels
    position = {label: i for i, label in enumerate(order)}
    index = np.array([position.get(t, -1) for t in texts], dtype=np.int64)
    layout = stats_layout(spec)
    if len(order) > layout.num_labels:
        raise DataError(
            table.site,
            f"the file has {len(order)} label values, more than task.numClasses "
            f"({layout.num_labels})",
            path=table.source,
        )
    return layout.encode(table.features(), index)
