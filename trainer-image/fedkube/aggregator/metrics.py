"""The aggregator's Prometheus metrics. One aggregator serves one job, so labels stay few."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fedkube.aggregator.coordinator import Coordinator
from fedkube.spec.progress import RoundRecord


class _StateCollector(Collector):
    """Gauges read from the coordinator at scrape time, so they cannot go stale."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    def collect(self) -> Iterator[GaugeMetricFamily]:
        c = self.c
        job = c.job.name
        yield GaugeMetricFamily("fedkube_round", "Rounds completed.", value=c.rounds_completed)
        yield GaugeMetricFamily("fedkube_rounds_total", "Rounds asked for.", value=c.spec.rounds)
        g = c.log.latest_global()
        for key in ("loss", "accuracy"):
            fam = GaugeMetricFamily(
                f"fedkube_global_{key}",
                f"Global model {key} on the sites' held-out data.",
                labels=["job"],
            )
            value = getattr(g, key) if g is not None else None
            if value is not None:
                fam.add_metric([job], value)
            yield fam
        yield GaugeMetricFamily(
            "fedkube_sites_connected",
            "Sites holding a connection.",
            value=sum(s.connected for s in c.sites.values()),
        )
        report = c.privacy.report(c.history)
        if report is not None:
            yield GaugeMetricFamily(
                "fedkube_privacy_epsilon",
                "Epsilon spent (update-level DP, at its delta).",
                value=report.epsilon,
            )
        last = c.history[-1].sites if c.history else []
        yield GaugeMetricFamily(
            "fedkube_sites_in_round", "Sites whose update made the last round.", value=len(last)
        )


class AggregatorMetrics:
    def __init__(self, coordinator: Coordinator) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(coordinator))
        self.bytes_received = Counter(
            "fedkube_bytes_received", "Tensor bytes received from sites.", registry=self.registry
        )
        self.bytes_sent = Counter(
            "fedkube_bytes_sent", "Tensor bytes sent to sites.", registry=self.registry
        )
        # Every protocol message's serialised size, by call: what secure aggregation adds
        # (keys, shares, reveals, bigger tasks) shows beside the tensors.
        self.message_bytes = Counter(
            "fedkube_message_bytes",
            "Serialised bytes of protocol messages, by direction and call.",
            ["direction", "call"],
            registry=self.registry,
        )
        self.refused = Counter(
            "fedkube_messages_refused",
            "Messages refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.round_duration = Histogram(
            "fedkube_round_duration_seconds",
            "Wall time from a round's opening to its close.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=self.registry,
        )
        coordinator.round_closed_hooks.append(self._round_closed)

    def _round_closed(self, entry: RoundRecord) -> None:
        self.round_duration.observe(entry.duration_seconds)
