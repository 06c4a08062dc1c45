"""The FederatedJob resource (fedkube.io/v1alpha1) as pydantic models: the one schema.

The operator, the aggregator, the trainer and `fedkube run` all parse these models; the CRD's
OpenAPI schema is generated from them. Field names are camelCase on the wire (Kubernetes
convention) and snake_case in Python.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from fedkube.spec.base import _Model
from fedkube.spec.communication import CommunicationSpec
from fedkube.spec.datasets import DATASET_SHAPES
from fedkube.spec.job_rules import JOB_RULES
from fedkube.spec.job_settings import (
    AggregatorSpec,
    CheckpointSpec,
    EvaluationSpec,
    OutputSpec,
    PersonalizationSpec,
)
from fedkube.spec.pods import PodsSpec
from fedkube.spec.security import (
    PrivacySpec,
    SecuritySpec,
)
from fedkube.spec.sites import DataSpec, SiteSpec
from fedkube.spec.statistics import StatisticsSpec
from fedkube.spec.task import (
    FedAvgSpec,
    StrategySpec,
    TaskSpec,
)


class JobSpec(_Model):
    """What the job author decides: the model, the rounds, the strategy, the sites and the
    privacy the consortium agreed, within what each site allows."""

    model_config = JOB_RULES

    task: TaskSpec
    rounds: int = Field(ge=1, le=100000, description="Training rounds to run.")
    min_sites_per_round: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="The fewest sites whose updates close a round (a quorum); a round short "
        "of it at roundTimeoutSeconds is tried again.",
    )
    sites_per_round: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="For large consortia: each training round asks a random sample of this "
        "many connected sites (none: every connected site). Round 0 and the final "
        "evaluation ask every site.",
    )
    round_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="How long a round waits for updates before it closes with those in.",
    )
    join_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="At start, how long to wait for every site before starting with a quorum.",
    )
    strategy: StrategySpec = Field(
        default_factory=FedAvgSpec,
        description="How the aggregator folds the sites' updates into the next model.",
    )
    sites: list[SiteSpec] = Field(
        min_length=1, max_length=1000, description="The sites that train, each by name."
    )
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    aggregator: AggregatorSpec = Field(
        default_factory=AggregatorSpec,
        description="Where the aggregator listens, or the endpoint of one run elsewhere.",
    )
    personalization: PersonalizationSpec = Field(default_factory=PersonalizationSpec)
    security: SecuritySpec = Field(
        default_factory=SecuritySpec,
        description="Mutual TLS, secure aggregation and the defences against a bad site.",
    )
    privacy: PrivacySpec = Field(
        default_factory=PrivacySpec,
        description="Differential privacy: at update level (DP-FedAvg), at record level "
        "(DP-SGD), or both.",
    )
    suspend: bool = Field(
        default=False, description="On Kubernetes: stop the pods; false again resumes."
    )
    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="On Kubernetes: recreations of a failed pod."
    )
    statistics: StatisticsSpec = Field(
        default_factory=StatisticsSpec,
        description="Round 0's federated statistics: their accuracy and the sites' floors.",
    )
    communication: CommunicationSpec = Field(
        default_factory=CommunicationSpec,
        description="How updates and models are coded on the wire (compression).",
    )
    pods: PodsSpec = Field(
        default_factory=PodsSpec,
        description="On Kubernetes: resources, GPUs, nodeSelector and tolerations of the "
        "job's pods. Volumes, Secrets and host paths are the site's to give, never the job's.",
    )
    pod_cleanup: Literal["none", "succeeded", "all"] = Field(
        default="succeeded",
        description="On Kubernetes, when the job ends: delete its pods if it succeeded "
        "(succeeded), whatever the outcome (all), or keep them (none).",
    )

    @model_validator(mode="after")
    def _sites_agree(self) -> JobSpec:
        names = [s.name for s in self.sites]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"site names must be unique; repeated: {', '.join(duplicates)}")
        if self.min_sites_per_round > len(self.sites):
            raise ValueError(
                f"minSitesPerRound ({self.min_sites_per_round}) is above the number of sites "
                f"({len(self.sites)})"
            )
        if self.sites_per_round is not None and not (
            self.quorum() <= self.sites_per_round <= len(self.sites)
        ):
            needed = (
                f"minSitesPerRound ({self.min_sites_per_round})"
                if self.quorum() == self.min_sites_per_round
                else f"the secure-aggregation threshold ({self.quorum()})"
            )
            raise ValueError(
                f"sitesPerRound ({self.sites_per_round}) must be at least {needed}, or no round "
                f"could close, and at most the number of sites ({len(self.sites)})"
            )
        datasets = sorted({s.data.sklearn.dataset for s in self.sites if s.data and s.data.sklearn})
        if len(datasets) > 1:
            raise ValueError(
                f"all sklearn sites must share one dataset; found {', '.join(datasets)}"
            )
        tls = self.security.mutual_tls
        unknown = sorted(set(tls.site_secret_names) - set(names)) if tls else []
        if unknown:
            raise ValueError(
                f"security.mutualTls.siteSecretNames names {', '.join(unknown)}, which are not "
                "sites of this job"
            )
        uses_files = any(s.data and s.data.file for s in self.sites)
        if uses_files and (self.task.input_width() is None or self.task.class_count() is None):
            raise ValueError(
                "task.numFeatures (or task.features) and task.numClasses (or task.labels) are "
                "required when a site reads its own file"
            )
        return self

    @model_validator(mode="after")
    def _one_preprocessing(self) -> JobSpec:
        """Scaling and missing values are part of the model: every site prepares its rows the
        same way, or the global model would see differently scaled inputs."""
        for setting in ("standardize", "missing"):
            chosen = [(i, getattr(s.data, setting)) for i, s in enumerate(self.sites) if s.data]
            if len({v for _, v in chosen}) > 1:
                first, (i, other) = chosen[0], next(c for c in chosen if c[1] != chosen[0][1])
                raise ValueError(
                    f"sites[{i}].data.{setting} is {other!r} but sites[{first[0]}].data.{setting}"
                    f" is {first[1]!r}; every site must prepare its rows the same way"
                )
        return self

    @model_validator(mode="after")
    def _mutual_tls_across_organisations(self) -> JobSpec:
        remote = [s.name for s in self.sites if s.remote]
        if (remote or self.aggregator.endpoint) and self.security.mutual_tls is None:
            across = (
                f"sites {', '.join(remote)} are remote" if remote else "aggregator.endpoint is set"
            )
            raise ValueError(
                f"security.mutualTls is required when a site is remote or aggregator.endpoint is "
                f"set ({across}): updates cross networks between organisations, and without "
                "mutual TLS anyone on the path could read them or claim a site's name"
            )
        return self

    @model_validator(mode="after")
    def _statistics_fit_the_privacy(self) -> JobSpec:
        """Round 0 sends each site's counts and sums: under differential privacy they may
        leave a site only inside secure aggregation's sum."""
        dp = self.privacy.update_level or self.privacy.record_level
        if dp and self.security.secure_aggregation is None and self.needs_statistics():
            raise ValueError(
                "a job with differential privacy whose sites read their own files, or whose "
                "preprocessing needs federated figures, needs security.secureAggregation: "
                "round 0 would send each site's counts and sums in the clear. Add "
                "secureAggregation (or, for sklearn data, standardize: dataset)"
            )
        return self

    @model_validator(mode="after")
    def _training_fits_the_protection(self) -> JobSpec:
        if self.task.train_function and self.strategy.name == "scaffold":
            raise ValueError(
                "strategy scaffold needs the built-in training loop (it corrects every step); "
                "remove task.trainFunction or choose another strategy"
            )
        robust = self.security.robust_aggregation
        if self.privacy.update_level and robust:
            raise ValueError(
                "privacy.updateLevel adds noise to the sum of clipped updates, which "
                f"security.robustAggregation ({robust.method}) replaces; choose one of them"
            )
        if self.privacy.update_level and self.strategy.name == "scaffold":
            raise ValueError(
                "privacy.updateLevel clips and noises model updates, not SCAFFOLD's control "
                "variates, which would leak; choose another strategy"
            )
        workers = self.pods.trainer.workers
        if workers > 1 and (self.task.train_function or self.strategy.name == "scaffold"):
            raise ValueError(
                f"pods.trainer.workers {workers} splits the built-in training loops' batches "
                "across processes; it does not yet run task.trainFunction or SCAFFOLD's "
                "corrections: use one worker for them"
            )
        if self.privacy.record_level and (
            self.task.train_function or self.strategy.name in ("scaffold", "fedprox")
        ):
            raise ValueError(
                "privacy.recordLevel trains with its own DP-SGD loop, which does not run "
                "task.trainFunction, FedProx's proximal term or SCAFFOLD's corrections"
            )
        if robust and robust.method == "multi_krum":
            f = robust.byzantine_sites
            if self.min_sites_per_round < 2 * f + 3:
                raise ValueError(
                    f"multi_krum withstands {f} bad site(s) only with at least {2 * f + 3} "
                    f"updates a round; raise minSitesPerRound (now {self.min_sites_per_round}) "
                    "or lower security.robustAggregation.byzantineSites"
                )
        return self

    @model_validator(mode="after")
    def _codec_fits(self) -> JobSpec:
        codec = self.communication.uplink.codec
        if codec == "none":
            return self
        clash = (
            "security.secureAggregation (masks cancel only in the full fixed-point field)"
            if self.security.secure_aggregation
            else f"security.robustAggregation ({self.security.robust_aggregation.method}: it "
            "compares whole updates, which a lossy codec alters)"
            if self.security.robust_aggregation
            else "security.updateNormBound (it bounds the update as trained, not as coded)"
            if self.security.update_norm_bound is not None
            else "privacy.updateLevel (its clip and noise are calibrated to the update as trained)"
            if self.privacy.update_level
            else None
        )
        if clash:
            raise ValueError(f"communication.uplink.codec {codec} cannot be used with {clash}")
        return self

    @model_validator(mode="after")
    def _secure_aggregation_fits(self) -> JobSpec:
        secure = self.security.secure_aggregation
        if secure and self.privacy.update_level and self.privacy.update_level.adaptive_clipping:
            raise ValueError(
                "privacy.updateLevel.adaptiveClipping needs each site's clipping outcome, which "
                "secure aggregation hides; give a fixed clipNorm"
            )
        if secure and 2 * secure.threshold_for(len(self.sites)) <= len(self.sites):
            raise ValueError(
                f"security.secureAggregation.threshold {secure.threshold} is not above half the "
                f"{len(self.sites)} sites: two disjoint groups could each unmask a sum, and an "
                "aggregator that shows them different survivors could subtract one from the "
                "other; use a majority"
            )
        if secure and secure.threshold_for(len(self.sites)) > len(self.sites):
            raise ValueError(
                f"security.secureAggregation needs at least {secure.threshold_for(len(self.sites))}"
                f" sites to unmask a sum; the job has {len(self.sites)}"
            )
        return self

    def quorum(self) -> int:
        """Updates a round needs: minSitesPerRound, or secure aggregation's threshold if higher."""
        secure = self.security.secure_aggregation
        threshold = secure.threshold_for(len(self.sites)) if secure else 0
        return max(self.min_sites_per_round, threshold)

    def input_shape(self) -> tuple[int, int]:
        """(number of features, number of classes) the model is built for."""
        dataset = next(
            (s.data.sklearn.dataset for s in self.sites if s.data and s.data.sklearn), None
        )
        known = DATASET_SHAPES[dataset] if dataset else (None, None)
        features = self.task.input_width() or known[0]
        classes = self.task.class_count() or known[1]
        assert features is not None and classes is not None  # guaranteed by _cross_field
        return features, classes

    def data_settings(self) -> DataSpec | None:
        """The preprocessing settings the sites share (one site's data; all agree)."""
        return next((s.data for s in self.sites if s.data is not None), None)

    def label_column(self) -> str:
        """The label's column name at the first site with data ("target" for sklearn)."""
        data = self.data_settings()
        return data.file.label_column if data is not None and data.file is not None else "target"

    def needs_statistics(self) -> bool:
        """Whether the job starts with the federated statistics round: sites read their own
        files (their columns are checked), or the preprocessing needs federated figures."""
        data = self.data_settings()
        files = any(s.data and s.data.file for s in self.sites)
        federated = data is not None and (
            data.standardize == "federated" or data.missing in ("impute_mean", "impute_median")
        )
        return files or federated

    def site(self, name: str) -> SiteSpec:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def training_fingerprint(self) -> str:
        """Hash of what decides the model's trajectory; a checkpoint must match it to resume."""
        relevant = {
            "task": self.task.model_dump(mode="json", by_alias=True),
            "strategy": self.strategy.model_dump(mode="json", by_alias=True),
        }
        blob = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class ObjectMeta(BaseModel):
    # Kubernetes adds uid, resourceVersion, managedFields...; only the name matters here.
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = None


class FederatedJob(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    api_version: Literal["fedkube.io/v1alpha1"]
    kind: Literal["FederatedJob"]
    metadata: ObjectMeta
    spec: JobSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def spec_summary(job: FederatedJob) -> dict[str, Any]:
    """The few facts about a job that a model card or a progress line needs."""
    return {
        "job": job.name,
        "rounds": job.spec.rounds,
        "sites": [s.name for s in job.spec.sites],
        "strategy": job.spec.strategy.name,
        "model": job.spec.task.model.name or job.spec.task.model.import_path,
        "specSha256": job.spec.training_fingerprint(),
    }
