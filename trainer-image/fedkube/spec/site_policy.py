"""A site's policy: what a job must promise before it may read this site's data.

The site admin writes it (Helm values ``site.policy``; the same YAML for ``fedkube run
--site-policy FILE``). Its defaults are the safe ones: a job that reads the site's data needs
record-level differential privacy, secure aggregation and mutual TLS until the admin relaxes
them. ``policy_refusals`` is pure: the operator calls it before any pod starts, and `fedkube
run` before any process starts, so a data scientist meets the refusal a hospital would give.

Jobs on built-in datasets (sklearn sources) read nothing of the site's and are not bound by
it; the operator's other checks (claims, Secrets, GPUs, Service types) still hold for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError

from fedkube.errors import SiteSettingsError
from fedkube.spec.base import _Model
from fedkube.spec.job import FederatedJob
from fedkube.spec.load import problems_of


class DatasetExemption(_Model):
    """A dataset the admin lets jobs read without record-level DP and without the batch floor
    (public or synthetic data, say); the reason is written down beside it."""

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="data.file.path inside the site's data volume, or a shell-style pattern.",
    )
    reason: str = Field(min_length=1, max_length=1024, description="Why it needs no DP.")


class PrivacyRequirement(_Model):
    required: bool = Field(
        default=True,
        description="Jobs that read the site's data must train with privacy.recordLevel "
        "(DP-SGD) within the bounds below.",
    )
    max_epsilon_per_job: float = Field(
        default=8.0,
        gt=0,
        le=100,
        description="A job must set privacy.recordLevel.epsilonCap at most this: the most "
        "one job may spend of a dataset's privacy.",
    )
    max_delta: float = Field(default=1e-5, gt=0, lt=1, description="The largest delta allowed.")
    min_noise_multiplier: float = Field(
        default=0.5, gt=0, le=1000, description="The smallest DP-SGD noise multiplier allowed."
    )
    exempt_datasets: list[DatasetExemption] = Field(
        default_factory=list, max_length=256, description="Datasets read without DP."
    )


class SecureAggregationRequirement(_Model):
    required: bool = Field(
        default=True,
        description="Jobs that read the site's data must use security.secureAggregation.",
    )
    min_threshold: int = Field(
        default=2,
        ge=2,
        le=1000,
        description="The fewest sites whose shares unmask a sum (the job's threshold, or its "
        "default majority, must be at least this).",
    )


class MutualTlsRequirement(_Model):
    required: bool = Field(
        default=True,
        description="Jobs that read the site's data must use security.mutualTls: no clear "
        "text, whatever the job says.",
    )
    trusted_ca_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=list,
        max_length=16,
        description="SHA-256 fingerprints (of the DER certificate) of the consortium CAs this "
        "site's trainers may trust: a trainer whose TLS folder holds another CA (one a tenant "
        "made) refuses to start, before it connects or reads a row. Empty: any CA.",
    )


class AggregatorTrust(_Model):
    in_cluster: bool = Field(
        default=True,
        description="A job may run its aggregator in this cluster (no aggregator.endpoint).",
    )
    endpoints: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list,
        max_length=256,
        description="host:port patterns (shell-style) of aggregators elsewhere that trainers "
        "may dial with this site's data; none by default.",
    )


class StatisticsFloor(_Model):
    min_bin_count: int = Field(
        default=5,
        ge=1,
        le=1_000_000,
        description="The least statistics.minBinCount a job may set.",
    )
    min_site_rows: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="The least statistics.minSiteRows a job may set.",
    )


class SitePolicy(_Model):
    """What a job must promise before it reads this site's data (Helm value site.policy)."""

    approval: Literal["required", "policy"] = Field(
        default="required",
        description="required: a job that meets the policy still reads the site's data only "
        "once the site admin approves its terms (a SiteApproval, `fedkube approve`); policy: "
        "meeting the policy is enough. (`fedkube run` has no approvals: it checks the policy.)",
    )
    privacy: PrivacyRequirement = Field(
        default_factory=PrivacyRequirement,
        description="The differential privacy a job must apply to this site's data.",
    )
    secure_aggregation: SecureAggregationRequirement = Field(
        default_factory=SecureAggregationRequirement,
        description="Whether a job must mask this site's updates (secure aggregation).",
    )
    mutual_tls: MutualTlsRequirement = Field(
        default_factory=MutualTlsRequirement,
        description="Whether a job must use mutual TLS.",
    )
    aggregators: AggregatorTrust = Field(
        default_factory=AggregatorTrust,
        description="The aggregators this site's trainers may send updates to.",
    )
    statistics: StatisticsFloor = Field(
        default_factory=StatisticsFloor,
        description="The least noise and bin size round 0's statistics of this site may use.",
    )
    min_batch_size_without_dp: int = Field(
        default=32,
        ge=1,
        le=65536,
        description="Without record-level DP, the least task.batchSize a job may set: an "
        "update from a tiny batch gives its records away (gradient inversion).",
    )


@dataclass(frozen=True)
class PolicyRefusal:
    """One way a job asks less than the policy requires: the job's field, what is wrong, and
    the policy setting that requires it (``privacy.maxEpsilonPerJob``)."""

    field: str
    message: str
    setting: str

    def text(self, setting_prefix: str) -> str:
        return f"{self.field}: {self.message} ({setting_prefix}{self.setting})"


def data_reading_sites(job: FederatedJob, local_only: bool) -> list[int]:
    """Indices of the sites that read a site's own file (on a cluster: only those that train
    here, not remote ones)."""
    return [
        i
        for i, s in enumerate(job.spec.sites)
        if s.data is not None and s.data.file is not None and not (local_only and s.remote)
    ]


def policy_refusals(job: FederatedJob, policy: SitePolicy, sites: list[int]) -> list[PolicyRefusal]:
    """Every way this job falls short of the policy, for the sites (indices) that read this
    site's data; none when no site does."""
    if not sites:
        return []
    spec = job.spec
    out: list[PolicyRefusal] = []
    exempt = all(_exemption(job, i, policy) is not None for i in sites)
    if policy.privacy.required and not exempt:
        out += _privacy_refusals(job, policy)
    secure = spec.security.secure_aggregation
    if policy.secure_aggregation.required:
        if secure is None:
            out.append(
                PolicyRefusal(
                    "spec.security.secureAggregation",
                    "this site requires secure aggregation for jobs that read its data, so the "
                    "aggregator sees only the sum of the updates; add it",
                    "secureAggregation.required",
                )
            )
        elif secure.threshold_for(len(spec.sites)) < policy.secure_aggregation.min_threshold:
            out.append(
                PolicyRefusal(
                    "spec.security.secureAggregation.threshold",
                    f"{secure.threshold_for(len(spec.sites))} site(s) could unmask a sum; this "
                    f"site requires at least {policy.secure_aggregation.min_threshold}",
                    "secureAggregation.minThreshold",
                )
            )
    if policy.mutual_tls.required and spec.security.mutual_tls is None:
        out.append(
            PolicyRefusal(
                "spec.security.mutualTls",
                "this site sends nothing in clear text for a job that reads its data; add "
                "mutualTls",
                "mutualTls.required",
            )
        )
    out += _aggregator_refusals(job, policy)
    floors = policy.statistics
    for name, asked, floor, setting in (
        ("minBinCount", spec.statistics.min_bin_count, floors.min_bin_count, "minBinCount"),
        ("minSiteRows", spec.statistics.min_site_rows, floors.min_site_rows, "minSiteRows"),
    ):
        if asked < floor:
            out.append(
                PolicyRefusal(
                    f"spec.statistics.{name}",
                    f"{asked} would report counts of fewer records than this site allows "
                    f"({floor}); raise it",
                    f"statistics.{setting}",
                )
            )
    batch = spec.task.batch_size
    # The floor protects records; an exempt dataset's rows need no protection.
    if (
        not exempt
        and spec.privacy.record_level is None
        and batch < policy.min_batch_size_without_dp
    ):
        out.append(
            PolicyRefusal(
                "spec.task.batchSize",
                f"{batch} without record-level DP: an update from so few records gives them "
                f"away; this site requires at least {policy.min_batch_size_without_dp}, or "
                "privacy.recordLevel",
                "minBatchSizeWithoutDp",
            )
        )
    return out


def exemption_reasons(job: FederatedJob, policy: SitePolicy, sites: list[int]) -> list[str]:
    """The written reasons under which these sites' datasets are read without DP."""
    found = [_exemption(job, i, policy) for i in sites]
    return [f"{e.path}: {e.reason}" for e in found if e is not None]


def _exemption(job: FederatedJob, index: int, policy: SitePolicy) -> DatasetExemption | None:
    data = job.spec.sites[index].data
    path = data.file.path if data is not None and data.file is not None else None
    if path is None:
        return None
    return next((e for e in policy.privacy.exempt_datasets if fnmatchcase(path, e.path)), None)


def _privacy_refusals(job: FederatedJob, policy: SitePolicy) -> list[PolicyRefusal]:
    need = policy.privacy
    dp = job.spec.privacy.record_level
    if dp is None:
        return [
            PolicyRefusal(
                "spec.privacy.recordLevel",
                "this site requires record-level differential privacy (DP-SGD) for jobs that "
                f"read its data: noiseMultiplier at least {need.min_noise_multiplier:g}, delta "
                f"at most {need.max_delta:g}, epsilonCap at most {need.max_epsilon_per_job:g}",
                "privacy.required",
            )
        ]
    out = []
    if dp.epsilon_cap is None or dp.epsilon_cap > need.max_epsilon_per_job:
        asked = "no cap" if dp.epsilon_cap is None else f"{dp.epsilon_cap:g}"
        out.append(
            PolicyRefusal(
                "spec.privacy.recordLevel.epsilonCap",
                f"{asked}: this site lets one job spend at most epsilon "
                f"{need.max_epsilon_per_job:g} of a dataset; set epsilonCap at most that",
                "privacy.maxEpsilonPerJob",
            )
        )
    if dp.delta > need.max_delta:
        out.append(
            PolicyRefusal(
                "spec.privacy.recordLevel.delta",
                f"{dp.delta:g} is above the {need.max_delta:g} this site allows",
                "privacy.maxDelta",
            )
        )
    if dp.noise_multiplier < need.min_noise_multiplier:
        out.append(
            PolicyRefusal(
                "spec.privacy.recordLevel.noiseMultiplier",
                f"{dp.noise_multiplier:g} is below the {need.min_noise_multiplier:g} this site "
                "requires",
                "privacy.minNoiseMultiplier",
            )
        )
    return out


def _aggregator_refusals(job: FederatedJob, policy: SitePolicy) -> list[PolicyRefusal]:
    endpoint = job.spec.aggregator.endpoint
    trust = policy.aggregators
    if endpoint is None:
        if trust.in_cluster:
            return []
        return [
            PolicyRefusal(
                "spec.aggregator.endpoint",
                "this site sends its updates only to the aggregators it lists, not to one the "
                "job runs here; name one of them",
                "aggregators.inCluster",
            )
        ]
    if any(fnmatchcase(endpoint, pattern) for pattern in trust.endpoints):
        return []
    listed = ", ".join(trust.endpoints) or "none"
    return [
        PolicyRefusal(
            "spec.aggregator.endpoint",
            f"{endpoint} is not an aggregator this site sends its data's updates to (it "
            f"allows: {listed})",
            "aggregators.endpoints",
        )
    ]


def load_site_policy(path: str | Path) -> SitePolicy:
    """Read a policy file (YAML, the shape of Helm's site.policy). An empty file is the
    default policy. Raises SiteSettingsError naming the file and each wrong setting."""
    p = Path(path)
    try:
        document = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise SiteSettingsError(
            str(p),
            [f"(file): cannot read the site policy: {e.strerror or e}"],
            values="site.policy",
        ) from None
    except yaml.YAMLError as e:
        raise SiteSettingsError(
            str(p), [f"(yaml): not valid YAML: {e}"], values="site.policy"
        ) from None
    return parse_site_policy(document, str(p))


def parse_site_policy(document: object, source: str) -> SitePolicy:
    if not isinstance(document, dict):
        raise SiteSettingsError(
            source, ["(policy): expected a mapping of settings"], values="site.policy"
        )
    try:
        return SitePolicy.model_validate(document)
    except ValidationError as e:
        raise SiteSettingsError(source, problems_of(e), values="site.policy") from None
