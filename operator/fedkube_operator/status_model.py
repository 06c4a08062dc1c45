"""The FederatedJob status, as pydantic models: the operator writes it, the CRD's status
schema is generated from it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Condition(StatusModel):
    """Kubernetes condition conventions: one entry per type, changed in place."""

    type: str = Field(max_length=64, description="SpecValid, Ready, Complete, Failed and so on.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether it holds.")
    reason: str = Field(max_length=128, description="Why, in one CamelCase word.")
    message: str = Field(default="", max_length=4096, description="Why, in words.")
    last_transition_time: str = Field(
        max_length=64, description="When status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The spec's generation the condition was set for."
    )


class SiteStatus(StatusModel):
    name: str = Field(max_length=63, description="The site's name.")
    phase: str = Field(max_length=32, description="The trainer pod's phase, or Remote.")
    restarts: int = Field(default=0, description="Times its trainer pod was made again.")
    last_round: int = Field(default=0, description="The last round its update arrived in.")
    samples: int = Field(default=0, description="The records it trained on, as it claimed.")
    loss: float | None = Field(default=None, description="The global model's loss on its data.")
    accuracy: float | None = Field(
        default=None, description="The global model's accuracy on its data (0 to 1)."
    )


class JobStatus(StatusModel):
    """What the operator observed: the job's phase, rounds, metrics and each site's part."""

    phase: Phase = Field(
        default="Pending", description="Pending, Running, Succeeded, Failed or Suspended."
    )
    observed_generation: int | None = Field(
        default=None, description="The spec's generation this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="One entry per condition type."
    )
    round: int = Field(default=0, description="The last round that closed.")
    total_rounds: int = Field(default=0, description="The rounds the job runs (spec.rounds).")
    loss: float | None = Field(default=None, description="The global model's held-out loss.")
    accuracy: float | None = Field(
        default=None, description="The global model's held-out accuracy (0 to 1)."
    )
    sites_in_last_round: int = Field(
        default=0, description="Sites whose updates the last round folded in."
    )
    sites: list[SiteStatus] = Field(
        default_factory=list, max_length=1000, description="Each site's part, by name."
    )
    aggregator_restarts: int = Field(
        default=0, description="Times the aggregator pod was made again (it resumes)."
    )
    start_time: str | None = Field(default=None, description="When the job started (RFC 3339).")
    completion_time: str | None = Field(
        default=None, description="When it Succeeded or Failed (RFC 3339)."
    )
    model_path: str | None = Field(
        default=None, description="The model's path inside the aggregator's output volume."
    )
    # The PersistentVolumeClaim holding the model, result and checkpoints (at output/ and
    # checkpoints/ in it); it outlives the pods and goes with the job.
    model_volume: str | None = Field(
        default=None, description="The PersistentVolumeClaim that holds the model and result."
    )
    # The engine image the job's pods run: `fedkube fetch` starts its helper pod from it, an
    # image the site already runs.
    engine_image: str | None = Field(
        default=None, description="The engine image the job's pods run (fedkube fetch uses it)."
    )
    message: str = Field(default="", max_length=4096, description="What happened last, in words.")
