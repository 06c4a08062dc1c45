"""The job's smaller settings, each its own model: evaluation, personalisation, where the
model and checkpoints go, and how the aggregator is reached. ``JobSpec`` (``job.py``) holds
them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedkube.spec.base import DNS_LABEL, _Model, cel


class EvaluationSpec(_Model):
    """Scoring the global model on each site's held-out records."""

    every_rounds: int = Field(
        default=1, ge=1, le=10000, description="Evaluate the global model every N rounds."
    )
    noise_multiplier: float | None = Field(
        default=None,
        ge=0.3,
        le=1000,
        description="Each site's held-out counts leave it only with discrete Gaussian noise "
        "of this multiplier (per held-out record), and every evaluated round records the "
        "held-out epsilon spent (heldOutEpsilon). A job with differential privacy and no "
        "secure aggregation sends no site's scores without it, and has no federated "
        "evaluation; under secure aggregation the counts are summed masked, and noised "
        "first when this is set; a plain job that sets it sends noised counts too.",
    )


class PersonalizationSpec(_Model):
    """A model tuned to each site, kept at the site (never sent)."""

    method: Literal["none", "finetune", "ditto"] = Field(
        default="none",
        description="finetune: after the last round each site trains the global model further "
        "on its own data (FedAvg+FT); ditto: each site keeps a personal model trained beside "
        "the global one, pulled toward it by dittoLambda (Li et al. 2021).",
    )
    epochs: int = Field(default=5, ge=1, le=1000, description="Fine-tuning epochs (finetune).")
    ditto_lambda: float = Field(
        default=0.1, ge=0, le=100, description="Pull toward the global model (ditto)."
    )


class CheckpointSpec(_Model):
    """Where the aggregator keeps the state it resumes from."""

    path: str = Field(
        default="checkpoints",
        min_length=1,
        max_length=4096,
        description="Locally: the checkpoints' folder (relative: inside the output folder).",
    )
    claim_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="On Kubernetes: the PersistentVolumeClaim holding the aggregator's "
        "checkpoints and outputs. Without it the operator makes one for the job "
        "(<job>-output, owned by the job). Either outlives the pods.",
    )


class OutputSpec(_Model):
    """Where a local run writes the model, its card and the result."""

    path: str = Field(
        default="output",
        min_length=1,
        max_length=4096,
        description="Locally: the output folder (fedkube run --output overrides it).",
    )


class AggregatorServiceSpec(_Model):
    """On Kubernetes: how the aggregator's Service is reached. Another organisation's
    cluster needs NodePort or LoadBalancer (or an ingress in front of ClusterIP); the site
    admin allows which (Helm site.aggregatorServiceTypes)."""

    model_config = cel(
        (
            "!has(self.nodePort) || (has(self.type) && self.type == 'NodePort')",
            "nodePort is for type NodePort",
            ".nodePort",
        ),
        (
            "!has(self.loadBalancerSourceRanges) || size(self.loadBalancerSourceRanges) == 0 "
            "|| (has(self.type) && self.type == 'LoadBalancer')",
            "loadBalancerSourceRanges is for type LoadBalancer",
            ".loadBalancerSourceRanges",
        ),
    )

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP",
        description="The Service's type; the site admin allows which "
        "(site.aggregatorServiceTypes).",
    )
    node_port: int | None = Field(
        default=None,
        ge=30000,
        le=32767,
        description="NodePort: the node port for gRPC (default: one the cluster picks).",
    )
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=64,
        description="On the Service, for a cloud's load balancer settings.",
    )
    load_balancer_source_ranges: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=64,
        description="LoadBalancer: the CIDRs allowed to connect (the other sites' egress).",
    )

    @model_validator(mode="after")
    def _fits_the_type(self) -> AggregatorServiceSpec:
        if self.node_port is not None and self.type != "NodePort":
            raise ValueError(f"nodePort is for type NodePort, not {self.type}")
        if self.load_balancer_source_ranges and self.type != "LoadBalancer":
            raise ValueError(f"loadBalancerSourceRanges is for type LoadBalancer, not {self.type}")
        return self


class AggregatorSpec(_Model):
    endpoint: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$",
        max_length=255,
        description="host:port of an aggregator run elsewhere; none runs here then.",
    )
    port: int = Field(default=7070, ge=1, le=65535, description="gRPC port.")
    http_port: int = Field(default=9090, ge=1, le=65535, description="/metrics and /progress.")
    service: AggregatorServiceSpec = Field(default_factory=AggregatorServiceSpec)
