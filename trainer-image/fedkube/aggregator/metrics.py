"""The aggregator's Prometheus metrics, named after Prometheus's conventions: units as
suffixes, ``_total`` only on counters, and ``fedjob_namespace``/``fedjob``/``site`` labels
that never clash with the target labels Prometheus adds (``job``, ``namespace``, ``pod``). The
job's namespace is a label of its own, the same the operator's series carry, so two jobs of one
name in two namespaces never merge, whichever source a query reads (``local`` for
`fedkube run`). Label values come from
the job (its name, its sites), never from a message, so the series stay bounded.

Per-site evaluation figures are published only when the job has neither secure aggregation
nor differential privacy: under those, per-site figures must not leave the aggregator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fedkube.aggregator.coordinator import Coordinator
from fedkube.build_info import register_build_info
from fedkube.errors import UpdateRefused
from fedkube.spec.progress import GlobalScores, RoundRecord

PHASES = ("Pending", "Running", "Evaluating", "Succeeded", "Failed")
REFUSAL_REASONS = (
    "UnknownSite",
    "ProtocolMismatch",
    "RoundClosed",
    "DuplicateUpdate",
    "InvalidUpdate",
)


# The latest final global evaluation: (metric, help, what of it).
GLOBAL: list[tuple[str, str, Callable[[GlobalScores], float | None]]] = [
    (
        "fedkube_global_loss",
        "Held-out loss over the sites that scored the model.",
        lambda g: g.loss,
    ),
    ("fedkube_global_accuracy", "Held-out accuracy over those sites.", lambda g: g.accuracy),
    (
        "fedkube_global_accuracy_spread",
        "Best site's accuracy minus the worst's.",
        lambda g: g.accuracy_spread,
    ),
    ("fedkube_global_evaluated_round", "The round whose model it scores.", lambda g: g.round),
    ("fedkube_global_evaluation_sites", "Sites whose scores it covers.", lambda g: g.eval_sites),
]


JOB_LABELS = ["fedjob_namespace", "fedjob"]
LOCAL_NAMESPACE = "local"


def _gauge(name: str, doc: str, value: float | None, job: list[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=JOB_LABELS)
    if value is not None:
        family.add_metric(job, value)
    return family


class _JobCollector(Collector):
    """Gauges read from the coordinator at scrape time, so they cannot go stale."""

    def __init__(self, coordinator: Coordinator, namespace: str) -> None:
        self.c = coordinator
        self.namespace = namespace

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        c, job = self.c, [self.namespace, self.c.job.name]
        yield _gauge("fedkube_rounds_completed", "Rounds completed.", c.rounds_completed, job)
        yield _gauge("fedkube_rounds_planned", "Rounds the job asks for.", c.spec.rounds, job)
        yield _gauge(
            "fedkube_round_timeout_seconds",
            "How long a round may take (spec.roundTimeoutSeconds).",
            c.spec.round_timeout_seconds,
            job,
        )
        last = c.history[-1].closed_at if c.history else c.started_wall
        yield _gauge(
            "fedkube_last_progress_timestamp_seconds",
            "When the last round closed (or the aggregator started), Unix time.",
            last,
            job,
        )
        phase = GaugeMetricFamily(
            "fedkube_job_phase",
            "1 for the job's phase, 0 for the others.",
            labels=[*JOB_LABELS, "phase"],
        )
        for p in PHASES:
            phase.add_metric([*job, p], float(c.phase == p))
        yield phase
        yield from self._global(c, job)
        yield from self._sites(c, job)
        restarts = CounterMetricFamily(
            "fedkube_aggregator_restarts",
            "Times an aggregator resumed this job from its checkpoint.",
            labels=JOB_LABELS,
        )
        restarts.add_metric(job, c.restarts)
        yield restarts

    @staticmethod
    def _global(c: Coordinator, job: list[str]) -> Iterator[GaugeMetricFamily]:
        g = c.log.latest_global()
        for name, doc, value in GLOBAL:
            yield _gauge(name, doc, value(g) if g is not None else None, job)
        yield _gauge(
            "fedkube_round_sites",
            "Sites whose update made the last closed round.",
            len(c.history[-1].sites) if c.history else 0,
            job,
        )
        report = c.privacy.report(c.history)
        yield _gauge(
            "fedkube_privacy_epsilon",
            "Update-level DP: epsilon spent, at the job's delta.",
            report.epsilon if report else None,
            job,
        )
        record = c.spec.privacy.record_level
        yield _gauge(
            "fedkube_privacy_epsilon_cap",
            "Record-level DP: the epsilon each site stops at (privacy.recordLevel.epsilonCap).",
            record.epsilon_cap if record else None,
            job,
        )

    @staticmethod
    def _sites(c: Coordinator, job: list[str]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        def family(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*JOB_LABELS, "site"])

        connected = family("fedkube_site_connected", "1 while the site holds its stream open.")
        in_round = family(
            "fedkube_site_in_last_round", "1 if the site's update made the last round."
        )
        missed = family(
            "fedkube_site_rounds_missed", "Closed rounds in a row without the site's update."
        )
        late = family(
            "fedkube_site_lateness_seconds",
            "How long after the round's first update the site's last update arrived.",
        )
        epsilon = family(
            "fedkube_site_privacy_epsilon", "Record-level DP: epsilon the site reports it spent."
        )
        loss = family("fedkube_site_eval_loss", "The global model's held-out loss at the site.")
        accuracy = family(
            "fedkube_site_eval_accuracy", "The global model's held-out accuracy at the site."
        )
        private = c.secure is not None or c.spec.privacy.update_level or c.spec.privacy.record_level
        update_bytes = CounterMetricFamily(
            "fedkube_site_update_bytes",
            "Tensor bytes of the site's updates taken by this aggregator process.",
            labels=[*JOB_LABELS, "site"],
        )
        # Once per scrape, not once per site: a scrape stays linear in sites and rounds.
        last = set(c.history[-1].sites) if c.history else set()
        rounds_missed = _rounds_missed(c.history, list(c.sites))
        for name, s in c.sites.items():
            labels = [*job, name]
            connected.add_metric(labels, float(s.connected))
            in_round.add_metric(labels, float(name in last))
            missed.add_metric(labels, rounds_missed[name])
            update_bytes.add_metric(labels, s.update_bytes)
            late.add_metric(labels, s.lateness_seconds)
            if "epsilon" in s.metrics:
                epsilon.add_metric(labels, s.metrics["epsilon"])
            if not private and "loss" in s.metrics:
                loss.add_metric(labels, s.metrics["loss"])
                accuracy.add_metric(labels, s.metrics.get("accuracy", float("nan")))
        yield from (connected, in_round, missed, late, epsilon, loss, accuracy, update_bytes)


def _rounds_missed(history: list[RoundRecord], sites: list[str]) -> dict[str, int]:
    """Closed rounds in a row, up to the last, without each site's update."""
    missed = dict.fromkeys(sites, len(history))
    unseen = set(sites)
    for back, h in enumerate(reversed(history)):
        for site in unseen.intersection(h.sites):
            missed[site] = back
        unseen.difference_update(h.sites)
        if not unseen:
            break
    return missed


class AggregatorMetrics:
    def __init__(self, coordinator: Coordinator, namespace: str = LOCAL_NAMESPACE) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobCollector(coordinator, namespace))
        register_build_info(self.registry, "aggregator")
        self.namespace = namespace
        self.job = coordinator.job.name
        self.sites = set(coordinator.sites)
        r = self.registry
        self.transfer_bytes = Counter(
            "fedkube_transfer_bytes",
            "Tensor bytes moved, by direction (received: updates; sent: models).",
            [*JOB_LABELS, "direction"],
            registry=r,
        )
        # Every protocol message's serialised size, by call: what secure aggregation adds
        # (keys, shares, reveals, bigger tasks) shows beside the tensors.
        self.message_bytes = Counter(
            "fedkube_message_bytes",
            "Serialised bytes of protocol messages, by direction and call.",
            [*JOB_LABELS, "direction", "call"],
            registry=r,
        )
        self.refusals = Counter(
            "fedkube_refusals", "Messages refused, by reason.", [*JOB_LABELS, "reason"], registry=r
        )
        self.site_refusals = Counter(
            "fedkube_site_refusals",
            "Messages refused, by the site they named (unknown: not a site of the job).",
            [*JOB_LABELS, "site", "reason"],
            registry=r,
        )
        self.site_declines = Counter(
            "fedkube_site_declines",
            "Tasks a site declined: its manifest or guards refuse them (the reason is logged).",
            [*JOB_LABELS, "site"],
            registry=r,
        )
        self.round_duration = Histogram(
            "fedkube_round_duration_seconds",
            "Wall time from a round's opening to its close.",
            JOB_LABELS,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=r,
        )
        for direction in ("received", "sent"):
            self.transfer_bytes.labels(self.namespace, self.job, direction)
        for reason in REFUSAL_REASONS:
            self.refusals.labels(self.namespace, self.job, reason)
        for site in sorted(self.sites):  # from 0, so that the first decline is an increase
            self.site_declines.labels(self.namespace, self.job, site)
        self.round_duration.labels(self.namespace, self.job)
        coordinator.round_closed_hooks.append(self._round_closed)

    def refused(self, e: UpdateRefused) -> None:
        site = e.site if e.site in self.sites else "unknown"
        self.refusals.labels(self.namespace, self.job, type(e).__name__).inc()
        self.site_refusals.labels(self.namespace, self.job, site, type(e).__name__).inc()

    def declined(self, site: str) -> None:
        self.site_declines.labels(self.namespace, self.job, site).inc()

    def bytes_moved(self, direction: str, n: int) -> None:
        self.transfer_bytes.labels(self.namespace, self.job, direction).inc(n)

    def message(self, direction: str, call: str, size: int) -> None:
        self.message_bytes.labels(self.namespace, self.job, direction, call).inc(size)

    def _round_closed(self, entry: RoundRecord) -> None:
        self.round_duration.labels(self.namespace, self.job).observe(entry.duration_seconds)
