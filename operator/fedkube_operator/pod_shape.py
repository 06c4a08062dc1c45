"""The shape every job pod shares: the site's hardening and defaults around one container,
and the resources and placement the job asked for."""

from __future__ import annotations

from typing import Any

from fedkube.spec.pods import PodSettings

from fedkube_operator.job_pod_defaults import apply_to_pod, merged_resources
from fedkube_operator.labels import LABEL_ROLE
from fedkube_operator.settings import OperatorSettings


def hardened(container: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    container["securityContext"] = {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def job_pod(
    meta: dict[str, Any],
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    settings: OperatorSettings,
    asked: PodSettings,
) -> dict[str, Any]:
    """A job pod: the site's hardening, volumes and defaults (priority, runtime, spread,
    labels), and what the job asked (``spec.pods``): resources (over the site's, field by
    field), GPUs, nodeSelector, tolerations. Nothing the job asks reaches a volume."""
    defaults = settings.job_pod_defaults
    role = meta["labels"][LABEL_ROLE]
    site_resources = getattr(defaults.resources, role)
    resources: dict[str, Any] = merged_resources(site_resources, asked.resources)
    if asked.gpus:
        # Extended resources are given by limit (the request follows it).
        resources.setdefault("limits", {})[settings.gpu_resource] = asked.gpus
    container["resources"] = {k: v for k, v in resources.items() if v}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the operator recreates failed pods, counting them
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": settings.pod_security_context(),
        "containers": [hardened(container, settings)],
        "volumes": volumes,
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if asked.node_selector:
        spec["nodeSelector"] = dict(asked.node_selector)
    if asked.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in asked.tolerations
        ]
    return apply_to_pod(
        {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}, defaults
    )
