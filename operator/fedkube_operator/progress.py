"""Where the operator reads a job's aggregator /progress (``fetch_progress`` reads it)."""

from __future__ import annotations

from typing import Any

from fedkube.spec.job import FederatedJob
from fedkube.transport.progress_client import fetch_progress

from fedkube_operator.desired import OperatorSettings, aggregator_name


def progress_url(
    job: FederatedJob, pods: dict[str, dict[str, Any]], settings: OperatorSettings
) -> str | None:
    port = job.spec.aggregator.http_port
    if job.spec.aggregator.endpoint:
        host = job.spec.aggregator.endpoint.rsplit(":", 1)[0]
        return f"http://{host}:{port}/progress"
    if settings.progress_host:
        return f"http://{settings.progress_host}:{port}/progress"
    pod = pods.get(aggregator_name(job.name))
    ip = (pod or {}).get("status", {}).get("podIP")
    return f"http://{ip}:{port}/progress" if ip else None


__all__ = ["fetch_progress", "progress_url"]
