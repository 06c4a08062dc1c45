"""The kopf shell: read the job and what exists, call ``plan``, carry the plan out.

Every decision is in ``plan.py`` (pure); every API call is in ``kube.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from fedkube.errors import SpecError
from fedkube.privacy.dataset_budget import read_ledgers
from fedkube.spec.base import API_GROUP, API_VERSION
from fedkube.spec.load import parse_job
from fedkube.storage.audit_trail import AuditTrail

from fedkube_operator.consent import parse_approvals
from fedkube_operator.crd import PLURAL
from fedkube_operator.kube import Kube
from fedkube_operator.metrics import OperatorMetrics
from fedkube_operator.plan import plan
from fedkube_operator.plan_model import Observed
from fedkube_operator.progress import fetch_progress, progress_url
from fedkube_operator.settings import OperatorSettings
from fedkube_operator.site_placement import site_config_name
from fedkube_operator.site_report import site_report

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
RECONCILE_SECONDS = 2.0
SITE_REPORT_SECONDS = 5.0
log = logging.getLogger("fedkube.operator")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Status has a schema; kopf keeps its own bookkeeping in annotations instead.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="fedkube.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="fedkube.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # No scanning of namespaces and CRDs: the chart's least-privilege RBAC grants neither
    # (nor should it), and kopf retried for about a minute before serving any job without it.
    settings.scanning.disabled = True
    # The reconcile timer runs in a thread and cannot be cut short. When a job is deleted
    # mid-reconcile, kopf re-checks whether the timer stopped only this often; its default
    # of 60 s held the deletion (and `kubectl delete`) for a minute.
    settings.background.cancellation_polling = 0.5
    memo.setdefault("settings", OperatorSettings())
    memo.setdefault("metrics", OperatorMetrics())
    memo.kube = Kube()
    memo.locks = defaultdict(threading.Lock)


def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    resource: dict[str, Any] = {k: body[k] for k in body}
    ns, name = resource["metadata"]["namespace"], resource["metadata"]["name"]
    started = time.perf_counter()
    with memo.locks[(ns, name)]:
        try:
            settings: OperatorSettings = memo.settings
            found = memo.kube.observe(
                ns,
                name,
                settings.network_policy,
                settings.site_namespace,
                resource["metadata"].get("uid", ""),
                site_config_name(ns, name),
            )
            try:
                job = parse_job(resource)
                url = progress_url(job, found.pods, settings)
                progress = fetch_progress(url, token=settings.progress_token(resource))
            except SpecError:
                progress = None
            observed = Observed(
                found.pods,
                found.has_service,
                found.config_map is not None,
                progress,
                _now(),
                found.has_claim,
                found.has_network_policies,
                config_map=found.config_map,
                approvals=parse_approvals(memo.kube.approvals()),
                site_config_map=found.site_config_map,
                ledgers=_ledgers(memo),
                terminating=found.terminating,
            )
            result = plan(resource, observed, memo.settings)
            audit = Audit(memo.get("audit"), f"{ns}/{name}")
            # The manifest first: a pod created now must read the job as admitted.
            for obj in result.replace:
                memo.kube.replace(obj)
                audit.did("rewrote", obj)
            for obj in result.create:
                if memo.kube.create(obj):
                    audit.did("created", obj)
            for pod in result.delete_pods:
                where, real = found.locations.get(pod, (ns, pod))
                if memo.kube.delete("Pod", where, real):
                    audit.did("deleted", {"kind": "Pod", "metadata": {"name": real}})
            status = result.status.model_dump(by_alias=True, mode="json")
            # A null inside a list item is dropped by the API server rather than stored, so
            # it is left out: kopf then finds the status exactly as it was patched.
            status["sites"] = [
                {k: v for k, v in site.items() if v is not None} for site in status["sites"]
            ]
            for key, value in status.items():
                patch.status[key] = value
            for e in result.events:
                kopf.event(body, type=e.type, reason=e.reason, message=e.message)
                audit.decided(e.reason, e.message)
            memo.metrics.observe(ns, name, result.status)
        except Exception:
            memo.metrics.errors.inc()
            raise
        finally:
            memo.metrics.duration.observe(time.perf_counter() - started)


def _ledgers(memo: kopf.Memo) -> list[dict[str, Any]] | None:
    """The dataset ledgers, when the operator is given the state claim; None when it cannot
    read them (the trainers still judge each job)."""
    folder: Path | None = memo.get("site_state_dir")
    if folder is None:
        return None
    try:
        return read_ledgers(folder) if folder.is_dir() else []
    except (OSError, ValueError):
        return None


@dataclass
class Audit:
    """The site's audit trail (Helm site.audit), if it keeps one: every object made,
    rewritten or deleted for a job, and every decision posted as an Event."""

    trail: AuditTrail | None
    job: str

    def did(self, action: str, obj: dict[str, Any]) -> None:
        if self.trail is not None:
            what = f"{obj['kind']}/{obj['metadata']['name']}"
            self.trail.append(action, job=self.job, object=what)

    def decided(self, reason: str, message: str) -> None:
        if self.trail is not None:
            self.trail.append("decision", job=self.job, reason=reason, message=message)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    reconcile(body, patch, memo)


@kopf.timer(*RESOURCE, interval=RECONCILE_SECONDS)
def on_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    reconcile(body, patch, memo)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # The garbage collector removes what the job owned in its namespace; what runs for it in
    # the site's namespace goes now (or, were the operator down, with the next sweep).
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    memo.metrics.forget(ns, name)
    site_ns = memo.settings.site_namespace
    if site_ns:
        uid = body["metadata"].get("uid")
        for kind, obj, owner in memo.kube.site_objects(site_ns):
            if owner == uid:
                memo.kube.delete(kind, site_ns, obj)


@kopf.on.startup()
async def start_site_report(memo: kopf.Memo, **_: Any) -> None:
    memo.site_report = asyncio.create_task(_report_site(memo))


@kopf.on.cleanup()
async def stop_site_report(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("site_report")
    if task is not None:
        task.cancel()


async def _report_site(memo: kopf.Memo) -> None:
    """The site's FederatedSite status, rewritten every few seconds: the jobs' own status
    and the dataset ledgers change on their own, and nothing else would tell the site."""
    said = ""
    while True:
        try:
            await asyncio.to_thread(write_site_report, memo)
            await asyncio.to_thread(sweep_site_namespace, memo)
            said = ""
        except Exception as e:  # the site's status must never stop the operator's work
            if str(e) != said:
                log.warning("could not write the site's status (FederatedSite): %s", e)
            said = str(e)
        await asyncio.sleep(SITE_REPORT_SECONDS)


def write_site_report(memo: kopf.Memo) -> None:
    settings: OperatorSettings = memo.settings
    folder: Path | None = memo.get("site_state_dir")
    ledgers: list[dict[str, Any]] = []
    if folder is None:
        said = "not read: the operator is not given the state claim (--site-state-dir)"
    else:
        try:
            ledgers = read_ledgers(folder) if folder.is_dir() else []
            said = f"read from {folder}"
        except (OSError, ValueError) as e:
            said = f"{folder} cannot be read ({e}); restore the ledgers from a backup"
    jobs = memo.kube.federated_jobs(list(memo.get("namespaces") or []))
    status = site_report(settings, jobs, ledgers, said, _now())
    memo.kube.write_site_status(
        settings.site or "local", status.model_dump(by_alias=True, mode="json", exclude_none=True)
    )


def sweep_site_namespace(memo: kopf.Memo) -> None:
    """Delete what the operator made in the site's namespace for jobs that are gone (deleted
    while the operator was down). Listed before the jobs: an object made after the list
    belongs to a job the list of jobs then holds."""
    site_ns = memo.settings.site_namespace
    if not site_ns:
        return
    made = memo.kube.site_objects(site_ns)
    if not made:
        return
    jobs = memo.kube.federated_jobs(list(memo.get("namespaces") or []))
    live = {j["metadata"].get("uid") for j in jobs}
    for kind, name, uid in made:
        if uid not in live and memo.kube.delete(kind, site_ns, name):
            gone = {"kind": kind, "metadata": {"name": name}}
            Audit(memo.get("audit"), f"uid {uid}").did("swept", gone)
