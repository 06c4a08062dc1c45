"""Where each site's data comes from: a scikit-learn dataset split among the sites, or the
site's own file."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fedkube.spec.base import DNS_LABEL, _Model, cel

DatasetName = Literal["breast_cancer", "digits", "wine", "iris"]


class SklearnSource(_Model):
    """A dataset that ships inside scikit-learn, split into simulated sites."""

    model_config = cel(
        (
            "self.partition < self.numPartitions",
            "partition must be below numPartitions",
            ".partition",
        )
    )

    dataset: DatasetName = Field(description="A dataset scikit-learn ships (for trials).")
    num_partitions: int = Field(ge=1, le=1000, description="Into how many parts it is split.")
    partition: int = Field(ge=0, description="Which part of the split this site holds.")
    partitioner: Literal["iid", "dirichlet", "quantity"] = Field(
        default="iid",
        description="iid: shuffled evenly; dirichlet: label skew; quantity: size skew.",
    )
    alpha: float = Field(
        default=0.5, gt=0, le=1e6, description="Dirichlet concentration (dirichlet, quantity)."
    )
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Seeds the split: every site's must agree."
    )

    @model_validator(mode="after")
    def _partition_in_range(self) -> SklearnSource:
        if self.partition >= self.num_partitions:
            raise ValueError(
                f"partition {self.partition} is out of range for numPartitions "
                f"{self.num_partitions} (use 0..{self.num_partitions - 1})"
            )
        return self


class FileSource(_Model):
    """The site's own CSV or Parquet file."""

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="The file: relative to the manifest locally, to the site's data volume "
        "on Kubernetes.",
    )
    label_column: str = Field(
        min_length=1, max_length=256, description="The column holding each record's label."
    )
    feature_columns: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=100000, description="Default: every column but the label."
    )

    @field_validator("path")
    @classmethod
    def _known_format(cls, path: str) -> str:
        if not re.search(r"\.(csv|parquet|pq)$", path, re.IGNORECASE):
            raise ValueError("the file must end in .csv, .parquet or .pq")
        return path


class DataSpec(_Model):
    model_config = cel(
        (
            "has(self.sklearn) != has(self.file)",
            "give exactly one data source: sklearn or file",
            None,
        ),
        (
            "!has(self.standardize) || self.standardize != 'dataset' || has(self.sklearn)",
            "standardize: dataset needs an sklearn source",
            ".standardize",
        ),
    )

    sklearn: SklearnSource | None = None
    file: FileSource | None = None
    held_out_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of the site's rows kept for evaluation."
    )
    standardize: Literal["site", "federated", "dataset", "none"] = Field(
        default="site",
        description="Feature scaling: `site` uses the site's own training statistics (nothing "
        "shared); `federated` the mean and standard deviation of all sites' rows, from the "
        "federated statistics before round one (stored with the model); `dataset` (sklearn "
        "sources) the whole dataset's; `none` leaves features as they are. The same for every "
        "site.",
    )
    missing: Literal["refuse", "impute_mean", "impute_median", "drop_rows"] = Field(
        default="refuse",
        description="Empty feature values: refuse the file (naming column and row), fill "
        "with the federated mean or median, or drop the row. A row without a label is "
        "refused, or dropped by anything but refuse. The same for every site.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.sklearn is None) == (self.file is None):
            raise ValueError("give exactly one data source: `sklearn` or `file`")
        if self.standardize == "dataset" and self.sklearn is None:
            raise ValueError("standardize: dataset needs an sklearn source; use site or none")
        return self


# The most samples any site may claim for an update or an evaluation: no site has a trillion
# rows, and past this a claim only serves to outweigh the others.
MAX_SAMPLES = 1 << 40


class SiteSpec(_Model):
    model_config = cel(
        ("self.remote || has(self.data)", "a site that trains here needs data", ".data"),
    )

    name: str = Field(
        pattern=DNS_LABEL,
        max_length=63,
        description="The site's name, as its certificate and its operator's site.name say.",
    )
    remote: bool = Field(
        default=False,
        description="The site trains in another cluster (which applies the job with "
        "aggregator.endpoint); the aggregator expects it, no trainer runs here.",
    )
    data: DataSpec | None = Field(
        default=None, description="Where the site's records come from (not for remote sites)."
    )
    max_samples: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SAMPLES,
        description="The most samples this site may claim for an update or an evaluation (its "
        "row count, say): the aggregator refuses a larger claim, and under secure aggregation "
        "every site refuses a roster that gives this site more. Default: its round-0 row count "
        "where the aggregator has it, else only the protocol's bound (2^40).",
    )

    @model_validator(mode="after")
    def _data_unless_remote(self) -> SiteSpec:
        if not self.remote and self.data is None:
            raise ValueError("a site that trains here needs data")
        return self
