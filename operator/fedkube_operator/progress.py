"""Reading the aggregator's /progress (the JSON it serves beside /metrics)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from fedkube.spec.job import FederatedJob

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


def fetch_progress(url: str | None, timeout: float = 2.0) -> dict[str, Any] | None:
    """The aggregator's progress, or None when it is not answering (yet)."""
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except (OSError, ValueError):
        return None
