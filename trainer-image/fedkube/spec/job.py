"""The FederatedJob resource (fedkube.io/v1alpha1) as pydantic models: the one schema.

The operator, the aggregator, the trainer and `fedkube run` all parse these models; the CRD's
OpenAPI schema is generated from them. Field names are camelCase on the wire (Kubernetes
convention) and snake_case in Python.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic.alias_generators import to_camel

from fedkube.spec.datasets import DATASET_SHAPES

API_GROUP = "fedkube.io"
API_VERSION = "v1alpha1"
KIND = "FederatedJob"

# A DNS-1123 label: site names become parts of pod names and certificate identities.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def cel(*rules: tuple[str, str, str | None]) -> ConfigDict:
    """Kubernetes CEL rules (rule, message, fieldPath) for the CRD, mirroring a model's own
    cross-field validator so the API server refuses the same manifests at the door."""
    found: list[JsonValue] = [
        {"rule": r, "message": m, **({"fieldPath": f} if f else {})} for r, m, f in rules
    ]
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra={"x-kubernetes-validations": found},
    )


class ModelSpec(_Model):
    """Which model to train: a built-in one by name, or the user's own by import path."""

    model_config = cel(
        (
            "has(self.name) != has(self.importPath)",
            "give exactly one of name (a built-in model) or importPath",
            None,
        )
    )

    name: Literal["logistic_regression", "mlp", "cnn"] | None = Field(
        default=None, description="A built-in model."
    )
    import_path: Annotated[str, Field(pattern=IMPORT_PATH, max_length=256)] | None = Field(
        default=None,
        description="`package.module:factory` returning a torch.nn.Module; called as "
        "factory(num_features=..., num_classes=..., **params).",
    )
    hidden_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [32], max_length=16, description="Hidden layer widths (mlp)."
    )
    params: dict[str, int | float | str | bool] = Field(
        default_factory=dict, max_length=64, description="Keyword arguments for importPath."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name is None) == (self.import_path is None):
            raise ValueError("give exactly one of `name` (a built-in model) or `importPath`")
        return self


class TaskSpec(_Model):
    """What each site does with the global model in one round."""

    model: ModelSpec
    local_epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=65536)
    learning_rate: float = Field(default=0.01, gt=0, le=10)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1, description="SGD momentum.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    num_features: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Input width; required with file data."
    )
    num_classes: int | None = Field(
        default=None, ge=2, le=100_000, description="Label count; required with file data."
    )
    train_function: Annotated[str, Field(pattern=IMPORT_PATH, max_length=256)] | None = Field(
        default=None,
        description="`package.module:train` replacing the built-in loop; called as "
        "train(model, features, labels, config) and returns a dict of metrics.",
    )


class FedAvgSpec(_Model):
    """FedAvg: the sample-weighted mean of the sites' models."""

    name: Literal["fedavg"] = "fedavg"


class FedProxSpec(_Model):
    """FedProx: FedAvg plus a proximal term mu/2 ||w - w_global||^2 in each site's loss."""

    name: Literal["fedprox"]
    mu: float = Field(default=0.01, ge=0, le=100)


class FedAvgMSpec(_Model):
    """FedAvgM: server momentum on the mean update."""

    name: Literal["fedavgm"]
    server_learning_rate: float = Field(default=1.0, gt=0, le=100)
    momentum: float = Field(default=0.9, ge=0, lt=1)


class FedOptSpec(_Model):
    """FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021): an adaptive server optimiser that
    treats the mean update as a pseudo-gradient."""

    name: Literal["fedadam", "fedyogi", "fedadagrad"]
    server_learning_rate: float = Field(default=0.01, gt=0, le=100)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0, le=10, description="Adaptivity: added to sqrt(v).")


class ScaffoldSpec(_Model):
    """SCAFFOLD (Karimireddy et al. 2020): control variates correct each site's drift."""

    name: Literal["scaffold"]
    server_learning_rate: float = Field(default=1.0, gt=0, le=100)


StrategySpec = Annotated[
    FedAvgSpec | FedProxSpec | FedAvgMSpec | FedOptSpec | ScaffoldSpec,
    Field(discriminator="name"),
]


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

    dataset: DatasetName
    num_partitions: int = Field(ge=1, le=1000)
    partition: int = Field(ge=0, description="Which part of the split this site holds.")
    partitioner: Literal["iid", "dirichlet", "quantity"] = "iid"
    alpha: float = Field(
        default=0.5, gt=0, le=1e6, description="Dirichlet concentration (dirichlet, quantity)."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

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

    path: str = Field(min_length=1, max_length=4096)
    label_column: str = Field(min_length=1, max_length=256)
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
    standardize: Literal["site", "dataset", "none"] = Field(
        default="site",
        description="Feature scaling: `site` uses the site's own training statistics (nothing "
        "shared); `dataset` (sklearn sources) the whole dataset's, standing for a normalisation "
        "the consortium agreed on beforehand; `none` leaves features as they are.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.sklearn is None) == (self.file is None):
            raise ValueError("give exactly one data source: `sklearn` or `file`")
        if self.standardize == "dataset" and self.sklearn is None:
            raise ValueError("standardize: dataset needs an sklearn source; use site or none")
        return self


class SiteSpec(_Model):
    model_config = cel(
        ("self.remote || has(self.data)", "a site that trains here needs data", ".data"),
    )

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    remote: bool = Field(
        default=False,
        description="The site trains in another cluster (which applies the job with "
        "aggregator.endpoint); the aggregator expects it, no trainer runs here.",
    )
    data: DataSpec | None = None

    @model_validator(mode="after")
    def _data_unless_remote(self) -> SiteSpec:
        if not self.remote and self.data is None:
            raise ValueError("a site that trains here needs data")
        return self


class EvaluationSpec(_Model):
    every_rounds: int = Field(
        default=1, ge=1, le=10000, description="Evaluate the global model every N rounds."
    )


class RobustAggregationSpec(_Model):
    """Aggregation that a few bad or poisoned sites cannot steer."""

    model_config = cel(
        (
            "self.method != 'multi_krum' || !has(self.selected) || self.selected >= 1",
            "selected must be at least 1",
            ".selected",
        )
    )

    method: Literal["median", "trimmed_mean", "multi_krum"] = Field(
        description="median: coordinate-wise median; trimmed_mean: drop the trimFraction "
        "highest and lowest values of each coordinate; multi_krum: average the updates "
        "closest to their neighbours (Blanchard et al. 2017)."
    )
    trim_fraction: float = Field(default=0.2, ge=0, lt=0.5, description="trimmed_mean.")
    byzantine_sites: int = Field(
        default=1, ge=0, le=500, description="multi_krum: how many bad sites to withstand."
    )
    selected: int | None = Field(
        default=None, ge=1, le=1000, description="multi_krum: updates averaged (default n - f)."
    )


class SecureAggregationSpec(_Model):
    """Secure aggregation (Bonawitz et al. 2017): sites mask their updates so that the
    aggregator can unmask only their sum."""

    threshold: int | None = Field(
        default=None,
        ge=2,
        le=1000,
        description="Sites whose shares are needed to unmask a round's sum; a round with fewer "
        "survivors fails. Default: a majority of the sites (at least 2).",
    )
    clip_range: float = Field(
        default=8.0,
        gt=0,
        le=1e6,
        description="Update values are clipped to [-clipRange, clipRange] before fixed-point "
        "encoding; the resolution is clipRange / 2^30.",
    )

    def threshold_for(self, sites: int) -> int:
        return self.threshold if self.threshold is not None else max(2, sites // 2 + 1)


class MutualTlsSpec(_Model):
    """On Kubernetes: mutual TLS between the trainers and the aggregator, each pod mounting a
    Secret with ca.crt, tls.crt and tls.key (as `fedkube certs` writes them). Without it the
    operator runs the in-cluster traffic in clear text."""

    aggregator_secret_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="The aggregator's Secret; default <job>-aggregator-tls.",
    )
    site_secret_names: dict[str, Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]] = (
        Field(
            default_factory=dict,
            description="Site name to its Secret; a site not listed uses <job>-<site>-tls.",
        )
    )

    def aggregator_secret(self, job: str) -> str:
        return self.aggregator_secret_name or f"{job}-aggregator-tls"

    def site_secret(self, job: str, site: str) -> str:
        return self.site_secret_names.get(site, f"{job}-{site}-tls")


class SecuritySpec(_Model):
    model_config = cel(
        (
            "!has(self.secureAggregation) || !has(self.robustAggregation)",
            "robustAggregation needs every update in the clear, which secureAggregation hides "
            "from the aggregator; choose one",
            ".robustAggregation",
        ),
        (
            "!has(self.secureAggregation) || !has(self.updateNormBound)",
            "updateNormBound checks each update's norm, which the aggregator cannot see under "
            "secureAggregation; clip at the sites with privacy.updateLevel.clipNorm instead",
            ".updateNormBound",
        ),
    )

    update_norm_bound: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        description="Refuse an update whose L2 norm is above this (a broken or hostile site).",
    )
    robust_aggregation: RobustAggregationSpec | None = None
    secure_aggregation: SecureAggregationSpec | None = None
    mutual_tls: MutualTlsSpec | None = None

    @model_validator(mode="after")
    def _secure_aggregation_alone(self) -> SecuritySpec:
        if self.secure_aggregation and self.robust_aggregation:
            raise ValueError(
                f"robustAggregation ({self.robust_aggregation.method}) needs every update in "
                "the clear, which secureAggregation hides from the aggregator; choose one"
            )
        if self.secure_aggregation and self.update_norm_bound is not None:
            raise ValueError(
                "updateNormBound checks each update's norm, which the aggregator cannot see "
                "under secureAggregation; clip at the sites with privacy.updateLevel.clipNorm "
                "instead"
            )
        return self


class AdaptiveClippingSpec(_Model):
    """The clip norm follows a quantile of the updates' norms (Andrew et al. 2021)."""

    target_quantile: float = Field(
        default=0.5, gt=0, lt=1, description="Share of updates the clip should leave whole."
    )
    learning_rate: float = Field(
        default=0.2, gt=0, le=10, description="Geometric step of the clip norm per round."
    )
    count_stddev: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Noise on the count of unclipped updates; default spends a tenth of "
        "the privacy on it.",
    )


class UpdateLevelPrivacySpec(_Model):
    """DP-FedAvg: each update clipped to clipNorm, Gaussian noise (noiseMultiplier x clipNorm)
    added to their sum. Protects each site's whole contribution (site-level DP)."""

    clip_norm: float = Field(
        gt=0, le=1e6, description="The clip norm, or its first value with adaptiveClipping."
    )
    noise_multiplier: float = Field(ge=0, le=1000)
    delta: float = Field(default=1e-5, gt=0, lt=1, description="The delta epsilon is reported at.")
    adaptive_clipping: AdaptiveClippingSpec | None = None

    @model_validator(mode="after")
    def _count_noise_fits(self) -> UpdateLevelPrivacySpec:
        given = self.adaptive_clipping.count_stddev if self.adaptive_clipping else None
        if (
            given is not None
            and self.noise_multiplier > 0
            and 2 * given * self.noise_multiplier <= 1
        ):
            raise ValueError(
                f"adaptiveClipping.countStddev {given:g} leaves no privacy for the updates at "
                f"noiseMultiplier {self.noise_multiplier:g}; raise it above "
                f"{1 / (2 * self.noise_multiplier):g} or leave it out"
            )
        return self


class RecordLevelPrivacySpec(_Model):
    """DP-SGD at each site (Opacus): protects each record (patient) in a site's data."""

    noise_multiplier: float = Field(gt=0, le=1000)
    max_grad_norm: float = Field(gt=0, le=1e6, description="Per-example gradient clip.")
    delta: float = Field(default=1e-5, gt=0, lt=1)
    epsilon_cap: float | None = Field(
        default=None,
        gt=0,
        description="A site stops before a round would take it past this; a site's own "
        "`fedkube trainer --epsilon-cap`, if lower, wins.",
    )


class PrivacySpec(_Model):
    update_level: UpdateLevelPrivacySpec | None = None
    record_level: RecordLevelPrivacySpec | None = None


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
    path: str = Field(default="checkpoints", min_length=1, max_length=4096)
    claim_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="On Kubernetes: the PersistentVolumeClaim holding the aggregator's "
        "checkpoints and outputs, so a recreated aggregator resumes. Without it they live "
        "in the pod and a recreated aggregator starts over.",
    )


class OutputSpec(_Model):
    path: str = Field(default="output", min_length=1, max_length=4096)


class AggregatorSpec(_Model):
    endpoint: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$",
        max_length=255,
        description="host:port of an aggregator run elsewhere; none runs here then.",
    )
    port: int = Field(default=7070, ge=1, le=65535, description="gRPC port.")
    http_port: int = Field(default=9090, ge=1, le=65535, description="/metrics and /progress.")


class JobSpec(_Model):
    model_config = cel(
        (
            "!has(self.minSitesPerRound) || self.minSitesPerRound <= size(self.sites)",
            "minSitesPerRound must not exceed the number of sites",
            ".minSitesPerRound",
        ),
    )

    task: TaskSpec
    rounds: int = Field(ge=1, le=100000)
    min_sites_per_round: int = Field(default=1, ge=1, le=1000)
    round_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)
    join_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="At start, how long to wait for every site before starting with a quorum.",
    )
    strategy: StrategySpec = Field(default_factory=FedAvgSpec)
    sites: list[SiteSpec] = Field(min_length=1, max_length=1000)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    aggregator: AggregatorSpec = Field(default_factory=AggregatorSpec)
    personalization: PersonalizationSpec = Field(default_factory=PersonalizationSpec)
    security: SecuritySpec = Field(default_factory=SecuritySpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    suspend: bool = Field(
        default=False, description="On Kubernetes: stop the pods; false again resumes."
    )
    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="On Kubernetes: recreations of a failed pod."
    )
    pod_cleanup: Literal["none", "succeeded", "all"] = Field(
        default="succeeded",
        description="On Kubernetes, when the job ends: delete its pods if it succeeded "
        "(succeeded), whatever the outcome (all), or keep them (none).",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> JobSpec:
        names = [s.name for s in self.sites]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"site names must be unique; repeated: {', '.join(duplicates)}")
        if self.min_sites_per_round > len(self.sites):
            raise ValueError(
                f"minSitesPerRound ({self.min_sites_per_round}) is above the number of sites "
                f"({len(self.sites)})"
            )
        datasets = sorted({s.data.sklearn.dataset for s in self.sites if s.data and s.data.sklearn})
        if len(datasets) > 1:
            raise ValueError(
                f"all sklearn sites must share one dataset; found {', '.join(datasets)}"
            )
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
        tls = self.security.mutual_tls
        unknown = sorted(set(tls.site_secret_names) - set(names)) if tls else []
        if unknown:
            raise ValueError(
                f"security.mutualTls.siteSecretNames names {', '.join(unknown)}, which are not "
                "sites of this job"
            )
        secure = self.security.secure_aggregation
        if secure and self.privacy.update_level and self.privacy.update_level.adaptive_clipping:
            raise ValueError(
                "privacy.updateLevel.adaptiveClipping needs each site's clipping outcome, which "
                "secure aggregation hides; give a fixed clipNorm"
            )
        if secure and secure.threshold_for(len(self.sites)) > len(self.sites):
            raise ValueError(
                f"security.secureAggregation needs at least {secure.threshold_for(len(self.sites))}"
                f" sites to unmask a sum; the job has {len(self.sites)}"
            )
        uses_files = any(s.data and s.data.file for s in self.sites)
        if uses_files and (self.task.num_features is None or self.task.num_classes is None):
            raise ValueError(
                "task.numFeatures and task.numClasses are required when a site reads its own file"
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
        features = self.task.num_features or known[0]
        classes = self.task.num_classes or known[1]
        assert features is not None and classes is not None  # guaranteed by _cross_field
        return features, classes

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
