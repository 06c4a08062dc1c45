"""What the aggregator reports, as pydantic models: the contract between the aggregator (its
``/progress``, its checkpoint's history, ``result.json``) and its readers (``fedkube run``,
the operator, tests and benchmarks).

camelCase on the wire, snake_case in Python, as in the job spec. Fields a round or a job does
not have (no evaluation yet, no privacy settings) are left out of the JSON rather than null.
The JSON schema is checked in beside this module (``progress.schema.json``); a test fails
when it drifts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

Phase = Literal["Pending", "Running", "Evaluating", "Succeeded", "Failed"]
# What a site's evaluation may report, for the global model and its personal one.
SCORE_KEYS = ("loss", "accuracy", "auc", "personal_loss", "personal_accuracy", "personal_auc")


class Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_json_dict(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return out

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class Scores(Record):
    """Held-out scores of one model: a site's, or the sample-weighted mean over sites."""

    loss: float | None = None
    accuracy: float | None = None
    auc: float | None = None
    personal_loss: float | None = Field(None, alias="personal_loss")
    personal_accuracy: float | None = Field(None, alias="personal_accuracy")
    personal_auc: float | None = Field(None, alias="personal_auc")


class Evaluation(Scores):
    """The global model's scores over the sites that evaluated it."""

    eval_sites: int = 0
    eval_samples: int = 0
    # Best site's accuracy minus the worst's: how unevenly the model serves the sites.
    # None in a private job, where no site's own figures are known.
    accuracy_spread: float | None = None
    # From counts (a private job): summed under secure aggregation's masks, or noised at
    # each site; then how much held-out privacy the noised evaluations spent so far.
    from_counts: bool = False
    held_out_epsilon: float | None = None


class GlobalScores(Evaluation):
    """The latest evaluated global model, and which round made it."""

    round: int


class SecureRoundRecord(Record):
    revealed_by: int
    dropped: list[str] = Field(default_factory=list)
    # Sites whose revealed shares were wrong: the sum was rebuilt from the others'.
    faulty: list[str] = Field(default_factory=list)
    # Site -> the sites whose sealed shares did not open there; and the sites taken out of
    # the sum to settle those disputes (also in ``dropped``).
    unopened_shares: dict[str, list[str]] = Field(default_factory=dict)
    excluded: list[str] = Field(default_factory=list)
    stage_seconds: dict[str, float] = Field(default_factory=dict)


class RoundRecord(Evaluation):
    """One closed round; its evaluation fields fill in once the sites scored its model."""

    round: int
    sites: list[str]
    samples: int
    train_loss: float | None = None
    opened_at: float
    closed_at: float
    duration_seconds: float
    max_train_seconds: float = 0.0
    bytes_received: int = 0  # tensor bytes of the updates folded into this round
    bytes_sent: int = 0  # tensor bytes of the models the sites fetched for it
    secure_aggregation: SecureRoundRecord | None = None
    epsilon: float | None = None  # update-level DP: spent after this round
    clip_norm: float | None = None  # adaptive clipping: the clip this round used
    unclipped_share: float | None = None


class SiteSummary(Scores):
    connected: bool = False
    last_round: int = 0
    samples: int = 0
    eval_samples: int = 0
    epsilon: float | None = None  # record-level DP: what the site reports it spent


class PrivacyReport(Record):
    epsilon: float
    delta: float
    noise_multiplier: float
    clip_norm: float


class Progress(Record):
    """The aggregator's ``/progress``: where the job is, polled by `fedkube run` and the
    operator."""

    job: str
    phase: Phase
    message: str = ""
    round: int = 0
    total_rounds: int
    open_round: int | None = None
    open_stage: str | None = None
    sites_connected: list[str] = Field(default_factory=list)
    global_: GlobalScores | None = Field(None, alias="global")
    sites: dict[str, SiteSummary] = Field(default_factory=dict)
    history: list[RoundRecord] = Field(default_factory=list)
    privacy: PrivacyReport | None = None
    initial_evaluation: Evaluation | None = None
    model_path: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


class SiteResult(SiteSummary):
    name: str


class JobResult(Record):
    """``result.json``: what a finished job leaves beside its model."""

    job: str
    phase: Phase
    rounds_completed: int
    total_rounds: int
    global_: GlobalScores | None = Field(None, alias="global")
    initial_evaluation: Evaluation | None = None
    sites: list[SiteResult]
    history: list[RoundRecord]
    privacy: PrivacyReport | None = None
    model_path: str = Field(description="Empty when the job only computed statistics.")
    model_card: str
    preprocessing_path: str | None = None
    statistics_path: str | None = None
    wall_seconds: float


def json_schemas() -> str:
    """The checked-in JSON schema of /progress and result.json."""
    schema = {
        "progress": Progress.model_json_schema(by_alias=True),
        "result": JobResult.model_json_schema(by_alias=True),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


__all__ = [
    "SCORE_KEYS",
    "Evaluation",
    "GlobalScores",
    "JobResult",
    "Phase",
    "PrivacyReport",
    "Progress",
    "RoundRecord",
    "Scores",
    "SecureRoundRecord",
    "SiteResult",
    "SiteSummary",
    "json_schemas",
]


SCHEMA_FILE = Path(__file__).with_name("progress.schema.json")


if __name__ == "__main__":  # python -m fedkube.spec.progress: rewrite the checked-in schema
    SCHEMA_FILE.write_text(json_schemas())
    print(f"wrote {SCHEMA_FILE}")
