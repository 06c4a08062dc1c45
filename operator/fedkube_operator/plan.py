"""Pure: what the operator should do about one FederatedJob, given what it observed.

``plan(resource, observed, settings)`` returns the objects to create, the pods to delete and
the status to write, with the events to post. It reads nothing and writes nothing; the kopf
handlers feed it and carry out the result, and the unit tests call it directly.
"""

from __future__ import annotations

from typing import Any

from fedkube import exit_codes
from fedkube.errors import SpecError
from fedkube.spec.job import FederatedJob
from fedkube.spec.load import parse_job
from fedkube.spec.progress import Progress, SiteSummary
from fedkube.spec.terms import terms_digest

from fedkube_operator.consent import held_for_consent
from fedkube_operator.dataset_budget_check import budget_problems
from fedkube_operator.desired import (
    aggregator_name,
    desired,
    output_claim,
    trainer_name,
)
from fedkube_operator.network_policy import network_policies
from fedkube_operator.plan_model import Event, Observed, Plan, set_condition
from fedkube_operator.rollout import stale
from fedkube_operator.settings import OperatorSettings
from fedkube_operator.site_policy import site_policy_problems
from fedkube_operator.status_model import JobStatus, SiteStatus


def _pod_phase(pod: dict[str, Any] | None) -> str:
    return (pod or {}).get("status", {}).get("phase") or ("Missing" if pod is None else "Pending")


def _termination(pod: dict[str, Any]) -> tuple[int | None, str]:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return term.get("exitCode"), (term.get("message") or "").strip()
    return None, ""


def _enter(
    plan: Plan, phase: str, now: str, reason: str, message: str, kind: str = "Normal"
) -> None:
    """Move to a phase, once: set the times, the message and an event."""
    s = plan.status
    if s.phase == phase:
        return
    s.phase = phase  # type: ignore[assignment]
    s.message = message
    if phase == "Running" and s.start_time is None:
        s.start_time = now
    if phase in ("Succeeded", "Failed"):
        s.completion_time = now
    plan.events.append(Event(kind, reason, message))


def _finish(
    plan: Plan,
    job: FederatedJob | None,
    observed: Observed,
    succeeded: bool,
    reason: str,
    message: str,
) -> None:
    now = observed.now
    _enter(
        plan,
        "Succeeded" if succeeded else "Failed",
        now,
        reason,
        message,
        "Normal" if succeeded else "Warning",
    )
    set_condition(plan.status, "Complete", succeeded, reason, message, now)
    set_condition(plan.status, "Failed", not succeeded, reason, message, now)
    set_condition(plan.status, "Running", False, reason, message, now)
    if job is not None:
        _cleanup(plan, job, observed)


def _apply_progress(status: JobStatus, progress: Progress) -> None:
    status.round = progress.round
    g = progress.global_
    if g is not None and g.accuracy is not None:
        status.accuracy = round(g.accuracy, 6)
        status.loss = round(g.loss, 6) if g.loss is not None else None
    if progress.history:
        status.sites_in_last_round = len(progress.history[-1].sites)
    if progress.model_path:
        status.model_path = progress.model_path


def _site_statuses(job: FederatedJob, observed: Observed, prior: JobStatus) -> list[SiteStatus]:
    before = {s.name: s for s in prior.sites}
    reported = observed.progress.sites if observed.progress else {}
    out = []
    for site in job.spec.sites:
        old = before.get(site.name, SiteStatus(name=site.name, phase="Pending"))
        pod = observed.pods.get(trainer_name(job.name, site.name))
        r = reported.get(site.name)
        out.append(
            SiteStatus(
                name=site.name,
                phase="Remote" if site.remote else _pod_phase(pod),
                restarts=old.restarts,
                last_round=r.last_round if r else old.last_round,
                samples=r.samples if r else old.samples,
                loss=_or(r, "loss", old.loss),
                accuracy=_or(r, "accuracy", old.accuracy),
            )
        )
    return out


def _or(summary: SiteSummary | None, key: str, before: float | None) -> float | None:
    value: float | None = getattr(summary, key) if summary is not None else None
    return before if value is None else value


def namespace(resource: dict[str, Any]) -> str:
    return str(resource["metadata"].get("namespace") or "")


def plan(resource: dict[str, Any], observed: Observed, settings: OperatorSettings) -> Plan:
    now = observed.now
    status = JobStatus.model_validate(resource.get("status") or {})
    applied = status.observed_generation
    # The generation this plan applies; back to the last one applied while an edit rolls out.
    status.observed_generation = resource["metadata"].get("generation")
    result = Plan(status=status)
    try:
        job = parse_job(resource, f"FederatedJob {resource['metadata']['name']}")
    except SpecError as e:
        message = "; ".join(e.problems)
        set_condition(status, "SpecValid", False, "InvalidSpec", message, now)
        _finish(result, None, observed, False, "InvalidSpec", message)
        return result
    finished = status.phase in ("Succeeded", "Failed")
    # A finished job keeps its outcome: a policy tightened later judges new jobs, not history.
    refused = [] if finished else site_policy_problems(job, settings, namespace(resource))
    if not finished and not refused and status.start_time is None and not observed.pods:
        # Before its first pod: a job that would pass a dataset's budget never starts. Once
        # running, its trainers hold their reservation and stop at the cap themselves.
        refused = budget_problems(job, namespace(resource), settings, observed.ledgers)
    if refused:
        message = "; ".join(refused)
        set_condition(status, "SpecValid", False, "RefusedBySite", message, now)
        # A running job the site now refuses stops: its pods go with the failure.
        _finish(result, job, observed, False, "RefusedBySite", message)
        return result
    if not finished:
        admitted = any(c.type == "SpecValid" and c.status == "True" for c in status.conditions)
        set_condition(status, "SpecValid", True, "Valid", "the spec was accepted", now)
        if not admitted:
            result.events.append(
                Event(
                    "Normal",
                    "Admitted",
                    f"the spec meets this site's policy; learning terms sha256 {terms_digest(job)}",
                )
            )
    status.total_rounds = job.spec.rounds
    if job.spec.aggregator.endpoint is None:
        status.model_volume = output_claim(job)
        status.engine_image = settings.image
    if observed.progress:
        _apply_progress(status, observed.progress)
    status.sites = _site_statuses(job, observed, status)

    if status.phase in ("Succeeded", "Failed"):
        _cleanup(result, job, observed)
        return result
    if _suspended(result, job, observed):
        return result
    want = desired(resource, job, settings)
    if held_for_consent(result, job, resource, observed, settings, want.pods):
        return result
    if not observed.has_config_map:
        result.create.append(want.config_map)
    elif observed.config_map is not None and not _ours(observed.config_map, want.config_map):
        result.replace.append(want.config_map)
        result.events.append(
            Event(
                "Normal",
                "ManifestRewritten",
                "the job's ConfigMap differed from the job's spec; rewritten",
            )
        )
    site_copy = want.site_config_map
    if site_copy is not None and (observed.site_config_map or {}).get("data") != site_copy["data"]:
        # Only the operator writes there: a copy that differs is of the job's old terms.
        (result.replace if observed.site_config_map else result.create).append(site_copy)
    if want.service is not None and not observed.has_service:
        result.create.append(want.service)
    result.create.extend(s for s in want.services if s["metadata"]["name"] not in observed.services)
    if want.claim is not None and not observed.has_claim:
        result.create.append(want.claim)
    if not observed.has_network_policies:
        result.create.extend(network_policies(resource, job, settings))
    if _pods(result, job, observed, want.pods):
        _outcome(result, job, observed)
    if result.rolling:
        status.observed_generation = applied
    recreating = [n for n in result.rolling if n in result.delete_pods]
    if recreating:
        result.events.append(
            Event(
                "Normal",
                "RollingOut",
                f"the spec changed (generation {resource['metadata'].get('generation')}): "
                f"recreating {', '.join(recreating)}; the aggregator resumes from its checkpoint",
            )
        )
    return result


def _ours(found: dict[str, Any], want: dict[str, Any]) -> bool:
    """The ConfigMap holds the manifest this operator writes, and the job owns it."""
    owners = (found.get("metadata") or {}).get("ownerReferences") or []
    uid = want["metadata"]["ownerReferences"][0]["uid"]
    return found.get("data") == want["data"] and any(o.get("uid") == uid for o in owners)


def _suspended(result: Plan, job: FederatedJob, observed: Observed) -> bool:
    """spec.suspend removes the pods; clearing it resumes from the checkpoint."""
    status, now = result.status, observed.now
    if job.spec.suspend:
        result.delete_pods = sorted(observed.pods)
        _enter(result, "Suspended", now, "Suspended", "spec.suspend is true; pods removed")
        set_condition(status, "Suspended", True, "Suspended", "spec.suspend is true", now)
        set_condition(status, "Running", False, "Suspended", "suspended", now)
        return True
    if status.phase == "Suspended":
        set_condition(status, "Suspended", False, "Resumed", "spec.suspend is false", now)
        result.events.append(Event("Normal", "Resumed", "resuming from the last checkpoint"))
        status.phase = "Pending"
    return False


def _pods(
    result: Plan, job: FederatedJob, observed: Observed, want: dict[str, dict[str, Any]]
) -> bool:
    """Create missing pods and recreate failed ones; False when a failure ends the job."""
    status = result.status
    for name, pod in want.items():
        seen = observed.pods.get(name)
        if seen is None and name in observed.terminating:
            # Still going (a roll-out, a recreation): made again once it is gone.
            result.rolling.append(name)
            continue
        if seen is None:
            result.create.append(pod)
            continue
        phase = _pod_phase(seen)
        if phase not in ("Succeeded", "Failed") and stale(seen, pod):
            result.delete_pods.append(name)
            result.rolling.append(name)
            continue
        if phase != "Failed":
            continue
        code, message = _termination(seen)
        role = (
            "the aggregator"
            if name == aggregator_name(job.name)
            else f"site {pod['metadata']['labels'].get('fedkube.io/site')}"
        )
        # The site's trainer refused the job on its dataset's budget, before training.
        if code == exit_codes.REFUSED_BY_SITE:
            refused = f"{role} refused the job: {message or 'exit code 3'}"
            set_condition(status, "SpecValid", False, "RefusedBySite", refused, observed.now)
            _finish(result, job, observed, False, "RefusedBySite", refused)
            return False
        # It refused its input (manifest, data, model): retrying cannot help.
        if code == exit_codes.BAD_INPUT:
            refused = f"{role} refused its input: {message or 'exit code 2'}"
            _finish(result, job, observed, False, "InvalidInput", refused)
            return False
        restarts = _restarts(status, job, name)
        if restarts >= job.spec.backoff_limit:
            _finish(
                result,
                job,
                observed,
                False,
                "BackoffLimitExceeded",
                f"{role} failed {restarts + 1} times (backoffLimit {job.spec.backoff_limit}); "
                f"last exit code {code}: {message[-500:]}",
            )
            return False
        _count_restart(status, job, name)
        result.delete_pods.append(name)
        result.events.append(
            Event("Warning", "PodFailed", f"{role} failed with exit code {code}; recreating it")
        )
    return True


def _outcome(result: Plan, job: FederatedJob, observed: Observed) -> None:
    """Succeeded, Failed or Running, from the aggregator's word and the pods' phases."""
    status, now, progress = result.status, observed.now, observed.progress
    local = job.spec.aggregator.endpoint is None
    agg_phase = _pod_phase(observed.pods.get(aggregator_name(job.name))) if local else None
    phase = progress.phase if progress else None
    local_sites = [trainer_name(job.name, s.name) for s in job.spec.sites if not s.remote]
    if phase == "Succeeded" or (local and agg_phase == "Succeeded"):
        done = f"completed {status.round} of {job.spec.rounds} rounds"
        _finish(result, job, observed, True, "Completed", done)
    elif progress is not None and phase == "Failed":
        _finish(result, job, observed, False, "AggregatorFailed", progress.message)
    elif (
        not local
        and observed.pods
        and all(_pod_phase(observed.pods.get(n)) == "Succeeded" for n in local_sites)
    ):
        _finish(result, job, observed, True, "Completed", "every local site finished")
    elif any(_pod_phase(p) == "Running" for p in observed.pods.values()):
        _enter(result, "Running", now, "Started", f"training {job.spec.rounds} rounds")
        set_condition(
            status, "Running", True, "Training", f"round {status.round} of {job.spec.rounds}", now
        )


def _restarts(status: JobStatus, job: FederatedJob, pod: str) -> int:
    if pod == aggregator_name(job.name):
        return status.aggregator_restarts
    return next((s.restarts for s in status.sites if trainer_name(job.name, s.name) == pod), 0)


def _count_restart(status: JobStatus, job: FederatedJob, pod: str) -> None:
    if pod == aggregator_name(job.name):
        status.aggregator_restarts += 1
        return
    for s in status.sites:
        if trainer_name(job.name, s.name) == pod:
            s.restarts += 1


def _cleanup(result: Plan, job: FederatedJob, observed: Observed) -> None:
    """A failed job stops its pods that still run (they can make no progress); finished pods
    go by spec.podCleanup. A lingering aggregator of a successful job exits on its own."""
    policy = job.spec.pod_cleanup
    failed = result.status.phase == "Failed"
    keep_finished = policy == "none" or (policy == "succeeded" and failed)
    doomed = set()
    for name, pod in observed.pods.items():
        finished = _pod_phase(pod) in ("Succeeded", "Failed")
        if (finished and not keep_finished) or (failed and not finished):
            doomed.add(name)
    result.delete_pods = sorted(doomed | set(result.delete_pods))
