"""The operator's Prometheus metrics. Per-job series carry ``fedjob`` and
``fedjob_namespace`` (never ``job``/``namespace``, which Prometheus sets from the target) and
use the aggregator's names for the same quantities, so a dashboard reads either source. They
are removed when the job goes away, so label sets stay bounded by the jobs that exist."""

from __future__ import annotations

import contextlib

from fedkube.build_info import register_build_info
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedkube_operator.status_model import JobStatus

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")
JOB_LABELS = ["fedjob_namespace", "fedjob"]


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("fedkube_jobs", "FederatedJobs by phase.", ["phase"], registry=r)
        self.phase = Gauge(
            "fedkube_job_phase",
            "1 for the job's phase, 0 for the others.",
            [*JOB_LABELS, "phase"],
            registry=r,
        )
        self.round = Gauge("fedkube_rounds_completed", "Rounds completed.", JOB_LABELS, registry=r)
        self.planned = Gauge(
            "fedkube_rounds_planned", "Rounds the job asks for.", JOB_LABELS, registry=r
        )
        self.loss = Gauge(
            "fedkube_global_loss", "The latest final global held-out loss.", JOB_LABELS, registry=r
        )
        self.accuracy = Gauge(
            "fedkube_global_accuracy",
            "The latest final global held-out accuracy.",
            JOB_LABELS,
            registry=r,
        )
        self.sites = Gauge(
            "fedkube_round_sites",
            "Sites whose update made the last closed round.",
            JOB_LABELS,
            registry=r,
        )
        self.errors = Counter("fedkube_reconcile_errors", "Reconciles that raised.", registry=r)
        self.duration = Histogram(
            "fedkube_reconcile_duration_seconds",
            "Time to reconcile one job.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        register_build_info(r, "operator")
        self._phases: dict[tuple[str, str], str] = {}
        for phase in PHASES:
            self.jobs.labels(phase).set(0)

    def observe(self, namespace: str, job: str, status: JobStatus) -> None:
        key = (namespace, job)
        self._phases[key] = status.phase
        for phase in PHASES:
            self.phase.labels(namespace, job, phase).set(float(status.phase == phase))
        self.round.labels(namespace, job).set(status.round)
        self.planned.labels(namespace, job).set(status.total_rounds)
        self.sites.labels(namespace, job).set(status.sites_in_last_round)
        if status.accuracy is not None:
            self.accuracy.labels(namespace, job).set(status.accuracy)
        if status.loss is not None:
            self.loss.labels(namespace, job).set(status.loss)
        self._count_phases()

    def forget(self, namespace: str, job: str) -> None:
        self._phases.pop((namespace, job), None)
        for g in (self.round, self.planned, self.loss, self.accuracy, self.sites):
            with contextlib.suppress(KeyError):  # never observed with a value
                g.remove(namespace, job)
        for phase in PHASES:
            with contextlib.suppress(KeyError):
                self.phase.remove(namespace, job, phase)
        self._count_phases()

    def _count_phases(self) -> None:
        for phase in PHASES:
            self.jobs.labels(phase).set(sum(p == phase for p in self._phases.values()))
