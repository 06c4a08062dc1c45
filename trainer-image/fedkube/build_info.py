"""``fedkube_build_info``: which release and protocol a process runs, as Prometheus's
convention has it (a gauge of 1 whose labels say it), so a dashboard shows a consortium member
on another release before its trainers are refused."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from fedkube import __version__
from fedkube.proto import PROTOCOL_VERSION


def register_build_info(registry: CollectorRegistry, component: str) -> Gauge:
    gauge = Gauge(
        "fedkube_build_info",
        "1, labelled with fedkube's version, its protocol version and the component.",
        ["version", "protocol", "component"],
        registry=registry,
    )
    gauge.labels(__version__, str(PROTOCOL_VERSION), component).set(1)
    return gauge
