"""The preprocessing a model was trained with: which columns, how they were scaled, how empty
values were filled, what each class means. Agreed by the sites before round one (from the
federated statistics or the manifest), stored in the checkpoint and beside the model, and
applied again by `fedkube predict`."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from fedkube.spec.base import _Model


class Preprocessing(_Model):
    features: list[str] = Field(min_length=1)
    standardize: Literal["site", "federated", "dataset", "none"]
    center: list[float] | None = Field(default=None, description="Subtracted from each feature.")
    scale: list[float] | None = Field(default=None, description="Then divided into each feature.")
    missing: Literal["refuse", "impute_mean", "impute_median", "drop_rows"] = "refuse"
    fill: list[float] | None = Field(
        default=None, description="impute_*: the value an empty feature gets (raw units)."
    )
    labels: list[str] = Field(min_length=2, description="Class i's label value.")
    label_column: str | None = Field(
        default=None, description="Where the training files held the label (for evaluate)."
    )

    @model_validator(mode="after")
    def _lengths(self) -> Preprocessing:
        n = len(self.features)
        for name in ("center", "scale", "fill"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} values for {n} features")
        if (self.center is None) != (self.scale is None):
            raise ValueError("center and scale come together")
        if self.scale is not None and any(not v > 0 for v in self.scale):
            raise ValueError("every scale must be positive")
        if self.missing.startswith("impute") and self.fill is None:
            raise ValueError(f"missing: {self.missing} needs fill values")
        return self

    @property
    def portable(self) -> bool:
        """Whether one preprocessing serves every site's rows (and so new rows)."""
        return self.standardize != "site"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()
