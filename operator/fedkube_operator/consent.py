"""Pure: whether the site consents to a job reading its data, from the SiteApprovals the site
admin made (cluster-scoped; a tenant cannot make one).

An approval matches a job by namespace, name and site, and admits it only while the digest of
the job's learning terms is the one approved and the approval has not expired. With the
policy's ``approval: policy`` the policy alone admits; a job that reads none of the site's
data needs no approval.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from fedkube.spec.approval import SiteApproval
from fedkube.spec.job import FederatedJob
from fedkube.spec.site_policy import data_reading_sites
from fedkube.spec.terms import terms_digest

from fedkube_operator.desired import trainer_name
from fedkube_operator.plan_model import Event, Observed, Plan, set_condition
from fedkube_operator.settings import OperatorSettings

# Condition reasons (AwaitingSiteApproval): False with the first two, True with the others.
APPROVED = "Approved"
ADMITTED_BY_POLICY = "AdmittedByPolicy"
NO_APPROVAL = "NoApproval"
TERMS_CHANGED = "TermsChanged"
EXPIRED = "ApprovalExpired"

# The condition a job that reads this site's data shows until the site admin consents.
AWAITING = "AwaitingSiteApproval"


@dataclass(frozen=True)
class Consent:
    needed: bool  # the job reads this site's data
    approved: bool
    reason: str
    message: str


def consent(
    job: FederatedJob,
    namespace: str,
    approvals: list[SiteApproval],
    settings: OperatorSettings,
    now: datetime.datetime,
) -> Consent:
    if not data_reading_sites(job, local_only=True) or settings.data_volume() is None:
        return Consent(False, True, "", "")
    if settings.policy.approval == "policy":
        return Consent(
            True,
            True,
            ADMITTED_BY_POLICY,
            "this site admits jobs that meet its policy (Helm value site.policy.approval)",
        )
    digest = terms_digest(job)
    mine = [
        a
        for a in approvals
        if a.spec.job.namespace == namespace
        and a.spec.job.name == job.name
        and a.spec.site in (None, settings.site)
    ]
    for a in mine:
        if a.spec.terms_sha256 == digest and not a.spec.expired(now):
            return Consent(True, True, APPROVED, f"approved by SiteApproval {a.name}")
    ask = f"the site admin approves them with `fedkube approve -n {namespace} {job.name}`"
    expired = [a for a in mine if a.spec.terms_sha256 == digest]
    if expired:
        a = expired[0]
        when = a.spec.expires_at.isoformat() if a.spec.expires_at else "?"
        return Consent(
            True,
            False,
            EXPIRED,
            f"SiteApproval {a.name} expired at {when}; this site's trainers stop; {ask}",
        )
    if mine:
        a = mine[0]
        return Consent(
            True,
            False,
            TERMS_CHANGED,
            f"SiteApproval {a.name} approved terms sha256 {a.spec.terms_sha256[:12]}..., the "
            f"job's are now {digest[:12]}...: this site's training is held until {ask}",
        )
    return Consent(
        True,
        False,
        NO_APPROVAL,
        f"no SiteApproval admits this job's terms (sha256 {digest[:12]}...) to this site's "
        f"data; {ask}",
    )


def parse_approvals(items: list[dict[str, object]]) -> list[SiteApproval]:
    """The approvals that parse; one a hand-written mistake broke admits nothing."""
    out = []
    for item in items:
        try:
            out.append(SiteApproval.model_validate(item))
        except ValueError:
            continue
    return out


def held_for_consent(
    result: Plan,
    job: FederatedJob,
    resource: dict[str, Any],
    observed: Observed,
    settings: OperatorSettings,
    pods: dict[str, dict[str, Any]],
) -> bool:
    """Without the site's consent, no trainer that reads its data runs: those not started are
    left out of ``pods``, those running are deleted (the site withdraws). True when the job
    never started and should create nothing yet."""
    status, now = result.status, observed.now
    c = consent(job, _namespace(resource), observed.approvals, settings, _instant(now))
    if not c.needed:
        return False
    before = next((x.status for x in status.conditions if x.type == AWAITING), None)
    set_condition(status, AWAITING, not c.approved, c.reason, c.message, now)
    if c.approved:
        if before == "True":
            result.events.append(Event("Normal", "SiteApproved", c.message))
        return False
    if before != "True":
        result.events.append(Event("Warning", AWAITING, c.message))
    started = status.start_time is not None or bool(observed.pods)
    held = {
        trainer_name(job.name, job.spec.sites[i].name): job.spec.sites[i].name
        for i in data_reading_sites(job, local_only=True)
    }
    for pod in held:
        pods.pop(pod, None)
    result.delete_pods += sorted(p for p in held if p in observed.pods)
    for site in status.sites:
        if site.name in held.values():
            site.phase = "Withdrawn" if started else "AwaitingApproval"
    if started:
        return False
    status.message = c.message
    return True


def _instant(now: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(now)


def _namespace(resource: dict[str, Any]) -> str:
    return str(resource["metadata"].get("namespace") or "")
