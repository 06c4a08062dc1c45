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

    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128)
    message: str = Field(default="", max_length=4096)
    last_transition_time: str = Field(max_length=64)
    observed_generation: int | None = None


class SiteStatus(StatusModel):
    name: str = Field(max_length=63)
    phase: str = Field(max_length=32, description="The trainer pod's phase, or Remote.")
    restarts: int = 0
    last_round: int = 0
    samples: int = 0
    loss: float | None = None
    accuracy: float | None = None


class JobStatus(StatusModel):
    phase: Phase = "Pending"
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    round: int = 0
    total_rounds: int = 0
    loss: float | None = None
    accuracy: float | None = None
    sites_in_last_round: int = 0
    sites: list[SiteStatus] = Field(default_factory=list, max_length=1000)
    aggregator_restarts: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    model_path: str | None = None
    # The PersistentVolumeClaim holding the model, result and checkpoints (at output/ and
    # checkpoints/ in it); it outlives the pods and goes with the job.
    model_volume: str | None = None
    # The engine image the job's pods run: `fedkube fetch` starts its helper pod from it, an
    # image the site already runs.
    engine_image: str | None = None
    message: str = Field(default="", max_length=4096)
