"""The kopf shell: read the job and what exists, call ``plan``, carry the plan out.

Every decision is in ``plan.py`` (pure); every API call is in ``kube.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
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
from fedkube.spec.progress import Progress
from fedkube.storage.audit_trail import AuditTrail

from fedkube_operator.consent import parse_approvals
from fedkube_operator.crd import PLURAL
from fedkube_operator.kube import Kube
from fedkube_operator.labels import LABEL_JOB
from fedkube_operator.metrics import OperatorMetrics
from fedkube_operator.plan import plan
from fedkube_operator.plan_model import Observed
from fedkube_operator.progress import fetch_progress, progress_url
from fedkube_operator.resync import (
    RESYNC_SECONDS,
    JobClock,
    Touched,
    fingerprint,
    full_reconcile_due,
    owning_job,
)
from fedkube_operator.settings import OperatorSettings
from fedkube_operator.site_placement import site_config_name
from fedkube_operator.site_report import site_report

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
# Each job's tick: its aggregator's /progress is read this often, and the job reconciled in
# full when that or anything else of it changed (resync.py).
RECONCILE_SECONDS = 2.0
SITE_REPORT_SECONDS = 5.0
# Blocking reads (the API, /progress) run in kopf's threads; its default of CPUs + 4 (6 here)
# left a hundred jobs' ticks queueing behind API round trips.
WORKERS = 16
# The site's approvals are read once for every job ticking within this long.
APPROVALS_SECONDS = 1.0
# A reconcile that raised (the API server restarting answers 403 and refuses connections for
# a few seconds) is tried again this soon; kopf's default of 60 s left a job's failed trainer
# unreplaced for a minute, longer than its rounds' attempts last (the chaos soak).
RETRY_SECONDS = 2.0
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
    settings.execution.max_workers = memo.get("workers") or WORKERS
    memo.setdefault("settings", OperatorSettings())
    memo.setdefault("metrics", OperatorMetrics())
    memo.setdefault("resync_seconds", RESYNC_SECONDS)
    memo.kube = Kube()
    memo.locks = defaultdict(threading.Lock)
    memo.clocks = defaultdict(JobClock)
    memo.touched = Touched()
    memo.approvals = SharedApprovals(memo.kube)


class SharedApprovals:
    """The SiteApprovals, listed once for all the jobs that tick within APPROVALS_SECONDS
    (one list a second, not one per job and tick)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._lock = threading.Lock()
        self._read_at = -APPROVALS_SECONDS
        self._items: list[dict[str, Any]] = []
        self._fingerprint = ""

    def get(self) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            if time.monotonic() - self._read_at >= APPROVALS_SECONDS:
                self._items = self.kube.approvals()
                self._fingerprint = fingerprint(
                    json.dumps(
                        [(a.get("metadata", {}).get("name"), a.get("spec")) for a in self._items],
                        sort_keys=True,
                    )
                )
                self._read_at = time.monotonic()
            return self._items, self._fingerprint


def reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    read: tuple[str | None, Progress | None] | None = None,
) -> None:
    """Observe the job, plan, carry the plan out. ``read``: (url, /progress) the tick read
    just now, reused when the job's aggregator is still at that url."""
    resource: dict[str, Any] = {k: body[k] for k in body}
    ns, name = resource["metadata"]["namespace"], resource["metadata"]["name"]
    started = time.perf_counter()
    with memo.locks[(ns, name)]:
        try:
            settings: OperatorSettings = memo.settings
            approvals, approvals_seen = memo.approvals.get()
            found = memo.kube.observe(
                ns,
                name,
                settings.network_policy,
                settings.site_namespace,
                resource["metadata"].get("uid", ""),
                site_config_name(ns, name),
                gang=bool(settings.gang_scheduler),
            )
            url: str | None = None
            try:
                job = parse_job(resource)
                url = progress_url(job, found.pods, settings)
                if read is not None and read[0] == url:
                    progress = read[1]
                else:
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
                approvals=parse_approvals(approvals),
                site_config_map=found.site_config_map,
                ledgers=_ledgers(memo),
                terminating=found.terminating,
                services=found.services,
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
            # Only what changed: an unchanged status is not written again on every tick.
            current = resource.get("status") or {}
            for key, value in status.items():
                if current.get(key) != value:
                    patch.status[key] = value
            for e in result.events:
                kopf.event(body, type=e.type, reason=e.reason, message=e.message)
                audit.decided(e.reason, e.message)
            memo.metrics.observe(ns, name, result.status)
            clock: JobClock = memo.clocks[(ns, name)]
            clock.last_full = time.monotonic()
            clock.progress_url = url
            clock.progress = progress.model_dump_json() if progress is not None else None
            clock.approvals = approvals_seen
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


@kopf.on.resume(*RESOURCE, backoff=RETRY_SECONDS)
@kopf.on.create(*RESOURCE, backoff=RETRY_SECONDS)
@kopf.on.update(*RESOURCE, field="spec", backoff=RETRY_SECONDS)
def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    reconcile(body, patch, memo)


@kopf.timer(*RESOURCE, interval=RECONCILE_SECONDS, backoff=RETRY_SECONDS)
def on_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    clock: JobClock = memo.clocks[key]
    touched = memo.touched.take(key)
    progress = None
    if clock.progress_url is not None:
        resource: dict[str, Any] = {k: body[k] for k in body}
        token = memo.settings.progress_token(resource)
        progress = fetch_progress(clock.progress_url, token=token)
    _, approvals = memo.approvals.get()
    seen = progress.model_dump_json() if progress is not None else None
    if full_reconcile_due(clock, time.monotonic(), seen, approvals, touched, memo.resync_seconds):
        reconcile(body, patch, memo, read=(clock.progress_url, progress))


# Watch events on what the operator made for a job mark the job for a full reconcile at its
# next tick (a pod failed, a Service was deleted...), instead of every tick listing them all.
@kopf.on.event("pods", labels={LABEL_JOB: kopf.PRESENT})
@kopf.on.event("services", labels={LABEL_JOB: kopf.PRESENT})
@kopf.on.event("configmaps", labels={LABEL_JOB: kopf.PRESENT})
@kopf.on.event("persistentvolumeclaims", labels={LABEL_JOB: kopf.PRESENT})
def on_owned_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    job = owning_job(meta.get("namespace", ""), dict(meta.get("labels") or {}))
    if job is not None:
        memo.touched.mark(job)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # The garbage collector removes what the job owned in its namespace; what runs for it in
    # the site's namespace goes now (or, were the operator down, with the next sweep).
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    memo.metrics.forget(ns, name)
    memo.clocks.pop((ns, name), None)
    site_ns = memo.settings.site_namespace
    if site_ns:
        uid = body["metadata"].get("uid")
        for kind, obj, owner in memo.kube.site_objects(site_ns, bool(memo.settings.gang_scheduler)):
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
    made = memo.kube.site_objects(site_ns, bool(memo.settings.gang_scheduler))
    if not made:
        return
    jobs = memo.kube.federated_jobs(list(memo.get("namespaces") or []))
    live = {j["metadata"].get("uid") for j in jobs}
    for kind, name, uid in made:
        if uid not in live and memo.kube.delete(kind, site_ns, name):
            gone = {"kind": kind, "metadata": {"name": name}}
            Audit(memo.get("audit"), f"uid {uid}").did("swept", gone)
