"""What a job may ask of the pods that run it on Kubernetes: resources, GPUs, placement.

Nothing here reaches a volume, Secret or host path: those are the site's (its Helm values).
A site may still refuse what a job asks (more GPUs than it offers), naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedkube.spec.base import _Model, cel

# A Kubernetes quantity ("500m", "2Gi", "1.5"): checked here so that a typo fails at
# `fedkube validate` and at the API server, not when the pod is created.
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
Quantity = Annotated[str, Field(pattern=QUANTITY, max_length=32)]
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class ResourceList(_Model):
    """Amounts by resource, as Kubernetes quantities (500m, 2, 4Gi)."""

    cpu: Quantity | None = Field(default=None, description="CPU cores (1, 500m).")
    memory: Quantity | None = Field(default=None, description="Memory in bytes (512Mi, 4Gi).")
    ephemeral_storage: Quantity | None = Field(
        default=None, alias="ephemeral-storage", description="Local scratch disk (1Gi)."
    )


class Resources(_Model):
    requests: ResourceList = Field(
        default_factory=ResourceList, description="What the scheduler reserves for the pod."
    )
    limits: ResourceList = Field(
        default_factory=ResourceList, description="The most the container may use."
    )


class Toleration(_Model):
    key: Annotated[str, Field(pattern=LABEL_KEY, max_length=316)] | None = Field(
        default=None, description="The taint's key; none with Exists tolerates every taint."
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Equal: the taint's value must be value; Exists: any."
    )
    value: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="The taint's value (with Equal)."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect tolerated; none: every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="With NoExecute: how long the pod stays once tainted."
    )


class PodSettings(_Model):
    resources: Resources = Field(
        default_factory=Resources,
        description="CPU, memory and ephemeral-storage requests and limits of the container "
        "(a namespace with a ResourceQuota refuses pods without them).",
    )
    gpus: int = Field(
        default=0,
        ge=0,
        le=16,
        description="GPUs for each pod (the site's GPU resource, nvidia.com/gpu by default); "
        "a site that offers fewer refuses the job.",
    )
    # (No constraint on keys: the API server refuses propertyNames in a CRD schema.)
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, description="Node labels the pods must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Taints the pods tolerate (nodes set aside for GPUs or a ward's work).",
    )


class TrainerPodSettings(PodSettings):
    workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Processes that train each site's share of every round together "
        "(torch.distributed DDP: gloo on CPU, NCCL on GPU), each a slice of every batch, in "
        "the trainer's pod (or, with `fedkube run`, beside the site's trainer process). The "
        "site still sends one update, the one a single process would train with the same "
        "batchSize, within float rounding.",
    )


class PodsSpec(_Model):
    model_config = cel(
        (
            "!has(self.aggregator) || !has(self.aggregator.gpus) || self.aggregator.gpus == 0",
            "the aggregator trains nothing: ask GPUs for the trainers (pods.trainer.gpus)",
            ".aggregator.gpus",
        )
    )

    trainer: TrainerPodSettings = Field(
        default_factory=TrainerPodSettings, description="Each site's trainer pod."
    )
    aggregator: PodSettings = Field(
        default_factory=PodSettings, description="The aggregator's pod (it trains nothing)."
    )

    @model_validator(mode="after")
    def _aggregator_has_no_gpu(self) -> PodsSpec:
        if self.aggregator.gpus:
            raise ValueError(
                "pods.aggregator.gpus: the aggregator trains nothing; ask GPUs for the "
                "trainers (pods.trainer.gpus)"
            )
        return self
