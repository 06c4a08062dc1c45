"""Where the operator reads a job's aggregator /progress (``fetch_progress`` reads it)."""

from __future__ import annotations

from typing import Any

from fedkube.spec.job import FederatedJob
from fedkube.transport.progress_client import fetch_progress

from fedkube_operator.desired import aggregator_name
from fedkube_operator.labels import LABEL_ROLE
from fedkube_operator.settings import OperatorSettings


def progress_url(
    job: FederatedJob, pods: dict[str, dict[str, Any]], settings: OperatorSettings
) -> str | None:
    port = job.spec.aggregator.http_port
    if job.spec.aggregator.endpoint:
        # The aggregator is at another organisation: its progress comes through one of this
        # cluster's trainers, which asks over its authenticated channel (never in clear text
        # across organisations).
        relay = settings.progress_relay_port
        if settings.progress_host:
            return f"http://{settings.progress_host}:{relay}/progress"
        for name in sorted(pods):
            status = pods[name].get("status", {})
            if pods[name].get("metadata", {}).get("labels", {}).get(LABEL_ROLE) == "trainer" and (
                status.get("phase") == "Running" and status.get("podIP")
            ):
                return f"http://{status['podIP']}:{relay}/progress"
        return None
    if settings.progress_host:
        return f"http://{settings.progress_host}:{port}/progress"
    pod = pods.get(aggregator_name(job.name))
    ip = (pod or {}).get("status", {}).get("podIP")
    return f"http://{ip}:{port}/progress" if ip else None


__all__ = ["fetch_progress", "progress_url"]
