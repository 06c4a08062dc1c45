"""The site's defaults for the pods it runs for jobs (Helm jobPods): resources per role,
priority and runtime class, labels, annotations and topology spread.

A namespace with a ResourceQuota refuses pods without requests and limits, and a cluster's
scheduling rules (priorities, gVisor or Kata runtimes, spreading across zones) are the
site's, not each job author's. A job's own spec.pods.*.resources win field by field; the
labels the operator selects its pods by always win over the site's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from fedkube.errors import SiteSettingsError
from fedkube.spec.base import _Model
from fedkube.spec.load import problems_of
from fedkube.spec.pods import LABEL_KEY, Resources
from pydantic import Field, ValidationError, field_validator

from fedkube_operator.labels import LABEL_JOB

LabelKey = Annotated[str, Field(pattern=LABEL_KEY, max_length=316)]
# Prefixes of the labels the operator sets and selects by: a site label there would move a
# pod out of its job's selectors.
RESERVED_LABEL_PREFIXES = ("fedkube.io/", "app.kubernetes.io/")
VALUES = "jobPods"
# "" is Helm's unset: the cluster's default class.
ClassName = Annotated[str, Field(pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", max_length=253)]


class LabelSelector(_Model):
    match_labels: dict[LabelKey, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)


class TopologySpread(_Model):
    """One of the pod's topologySpreadConstraints; without a labelSelector it spreads the
    pods of one job (the operator selects them by their job label)."""

    max_skew: int = Field(ge=1)
    topology_key: LabelKey
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = "ScheduleAnyway"
    label_selector: LabelSelector | None = None
    min_domains: int | None = Field(default=None, ge=1)


class RoleResources(_Model):
    trainer: Resources = Field(default_factory=Resources)
    aggregator: Resources = Field(default_factory=Resources)


class JobPodDefaults(_Model):
    resources: RoleResources = Field(default_factory=RoleResources)
    priority_class_name: ClassName = ""
    runtime_class_name: ClassName = ""
    labels: dict[LabelKey, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)
    topology_spread_constraints: list[TopologySpread] = Field(default_factory=list, max_length=8)

    @field_validator("labels")
    @classmethod
    def _not_the_operators(cls, labels: dict[str, str]) -> dict[str, str]:
        taken = sorted(k for k in labels if k.startswith(RESERVED_LABEL_PREFIXES))
        if taken:
            raise ValueError(
                f"{', '.join(taken)}: the operator sets and selects its pods by "
                f"{' and '.join(RESERVED_LABEL_PREFIXES)} labels; choose another key"
            )
        return labels


def load_job_pod_defaults(path: str | Path) -> JobPodDefaults:
    """Read the defaults (YAML, the shape of Helm's jobPods). Raises SpecError naming the
    file and each wrong setting."""
    p = Path(path)
    try:
        document = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise SiteSettingsError(
            str(p), [f"(file): cannot read the job pods' defaults: {e}"], values=VALUES
        ) from None
    except yaml.YAMLError as e:
        raise SiteSettingsError(str(p), [f"(yaml): not valid YAML: {e}"], values=VALUES) from None
    if not isinstance(document, dict):
        raise SiteSettingsError(
            str(p), ["(jobPods): expected a mapping of settings"], values=VALUES
        )
    try:
        return JobPodDefaults.model_validate(document)
    except ValidationError as e:
        raise SiteSettingsError(str(p), problems_of(e), values=VALUES) from None


def merged_resources(site: Resources, job: Resources) -> dict[str, dict[str, str]]:
    """Requests and limits: the job's where it gives one, else the site's."""
    out: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        amounts = getattr(site, kind).model_dump(by_alias=True, exclude_none=True)
        amounts.update(getattr(job, kind).model_dump(by_alias=True, exclude_none=True))
        if amounts:
            out[kind] = amounts
    return out


def apply_to_pod(pod: dict[str, Any], defaults: JobPodDefaults) -> dict[str, Any]:
    """The site's scheduling and metadata on a job pod the operator built (in place)."""
    meta = pod["metadata"]
    meta["labels"] = {**defaults.labels, **meta.get("labels", {})}
    if defaults.annotations:
        meta["annotations"] = {**defaults.annotations, **meta.get("annotations", {})}
    spec = pod["spec"]
    if defaults.priority_class_name:
        spec["priorityClassName"] = defaults.priority_class_name
    if defaults.runtime_class_name:
        spec["runtimeClassName"] = defaults.runtime_class_name
    if defaults.topology_spread_constraints:
        own = {LABEL_JOB: meta["labels"][LABEL_JOB]}
        spec["topologySpreadConstraints"] = [
            {
                **c.model_dump(by_alias=True, exclude_none=True),
                "labelSelector": c.label_selector.model_dump(by_alias=True)
                if c.label_selector
                else {"matchLabels": own},
            }
            for c in defaults.topology_spread_constraints
        ]
    return pod
