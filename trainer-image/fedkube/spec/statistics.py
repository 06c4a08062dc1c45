"""Federated statistics: what the job author sets (the sketch's accuracy, the privacy guards)
and the report `fedkube stats` prints and a job stores beside its model."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fedkube.spec.base import _Model

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class StatisticsSpec(_Model):
    relative_accuracy: float = Field(
        default=0.01,
        ge=0.001,
        le=0.2,
        description="Quantiles and min/max are reported within this relative error: each "
        "feature's values are counted in bins whose edges grow by (1+a)/(1-a), agreed by "
        "every site from the manifest.",
    )
    min_bin_count: int = Field(
        default=5,
        ge=1,
        le=1_000_000,
        description="A histogram bin or label count below this is merged with its neighbour "
        "or withheld from the report.",
    )
    min_site_rows: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="A site with fewer rows has no figures of its own in the report (its rows "
        "still count in the totals).",
    )


class Bin(_Model):
    low: float
    high: float
    count: int


class FeatureStatistics(_Model):
    name: str
    count: int = Field(description="Rows with a value.")
    missing: int
    mean: float | None = None
    std: float | None = Field(default=None, description="Population standard deviation.")
    min: float | None = Field(default=None, description="Lower edge of the lowest bin reported.")
    max: float | None = Field(default=None, description="Upper edge of the highest bin reported.")
    quantiles: dict[str, float] = Field(default_factory=dict)
    histogram: list[Bin] = Field(default_factory=list)


class LabelCount(_Model):
    label: str
    count: int | None = Field(description="None: below statistics.minBinCount, withheld.")


class StatisticsBlock(_Model):
    """The figures over one group of rows: all sites', or one site's."""

    rows: int
    features: list[FeatureStatistics]
    labels: list[LabelCount]


class StatisticsReport(_Model):
    job: str
    sites: list[str] = Field(description="The sites whose rows are in the totals.")
    secure: bool = Field(description="Summed under secure aggregation: no site's own figures.")
    relative_accuracy: float
    min_bin_count: int
    overall: StatisticsBlock
    per_site: dict[str, StatisticsBlock] = Field(default_factory=dict)
    withheld: dict[str, str] = Field(
        default_factory=dict, description="Sites without figures of their own, and why."
    )

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
