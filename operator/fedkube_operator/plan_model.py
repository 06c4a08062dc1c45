"""What ``plan`` reads and returns: the observed state of one job, and the plan (objects to
create or replace, pods to delete, the status and the events), with the conditions' helper."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedkube.spec.approval import SiteApproval
from fedkube.spec.progress import Progress

from fedkube_operator.status_model import Condition, JobStatus


@dataclass
class Observed:
    pods: dict[str, dict[str, Any]]
    has_service: bool
    has_config_map: bool
    progress: Progress | None
    now: str
    has_claim: bool = False  # the job's own output claim exists
    has_network_policies: bool = False  # the job's NetworkPolicies exist
    # The job's ConfigMap as found (None: not read): rewritten when it is not the one this
    # operator would write (the terms changed, or someone else made it).
    config_map: dict[str, Any] | None = None
    # The site's consents (cluster-scoped SiteApprovals).
    approvals: list[SiteApproval] = field(default_factory=list)
    # The site's copy of the manifest in its namespace, as found (None: not there).
    site_config_map: dict[str, Any] | None = None
    # The dataset ledgers on the site's state claim (None: the operator cannot read them).
    ledgers: list[dict[str, Any]] | None = None
    # The job's pods being deleted (their names cannot be made again yet).
    terminating: set[str] = field(default_factory=set)
    # The job's other Services found (a site's ranks), by name.
    services: set[str] = field(default_factory=set)


@dataclass
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: JobStatus
    create: list[dict[str, Any]] = field(default_factory=list)
    # Objects to write over what exists (the job's ConfigMap).
    replace: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # Pods deleted to roll an edit of the spec out (recreated at the next reconcile).
    rolling: list[str] = field(default_factory=list)


def set_condition(
    status: JobStatus, kind: str, value: bool, reason: str, message: str, now: str
) -> None:
    text = "True" if value else "False"
    for i, c in enumerate(status.conditions):
        if c.type == kind:
            moved = c.status != text
            status.conditions[i] = Condition(
                type=kind,
                status=text,
                reason=reason,
                message=message[:4096],
                last_transition_time=now if moved else c.last_transition_time,
                observed_generation=status.observed_generation,
            )
            return
    status.conditions.append(
        Condition(
            type=kind,
            status=text,
            reason=reason,
            message=message[:4096],
            last_transition_time=now,
            observed_generation=status.observed_generation,
        )
    )
