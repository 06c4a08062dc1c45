"""Pure: where a trainer that reads this site's data runs, and what it is called there.

It runs in the site's own namespace (Helm: the release namespace), where tenants have no
rights: the site's data and state claims, its certificate and its own copy of the job's
manifest are there, so nothing a tenant can read or write reaches the site's key or data.
What the operator makes there carries the job's namespace and uid as labels (no
ownerReference crosses namespaces); the operator deletes it with the job, and sweeps what a
deleted job left behind.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fedkube.spec.sites import SiteSpec

from fedkube_operator.labels import LABEL_JOB_NAMESPACE, LABEL_JOB_UID, job_labels
from fedkube_operator.settings import OperatorSettings


def held_by_site(site: SiteSpec, settings: OperatorSettings) -> bool:
    """This site's trainer reads the site's data volume, and the site keeps such trainers in
    its own namespace."""
    reads = not site.remote and site.data is not None and site.data.file is not None
    return reads and bool(settings.site_namespace) and settings.data_volume() is not None


def _suffix(namespace: str, job: str) -> str:
    # Jobs of the same name in two namespaces meet in the site's namespace: a short digest of
    # both keeps their objects apart (and "a" + "b-c" apart from "a-b" + "c").
    return hashlib.sha256(f"{namespace}/{job}".encode()).hexdigest()[:8]


def site_object_name(namespace: str, job: str, part: str) -> str:
    return f"{job}-{part}-{_suffix(namespace, job)}"


def site_trainer_name(namespace: str, job: str, site: str) -> str:
    return site_object_name(namespace, job, f"trainer-{site}")


def site_config_name(namespace: str, job: str) -> str:
    return site_object_name(namespace, job, "config")


def site_meta(
    resource: dict[str, Any],
    name: str,
    role: str,
    settings: OperatorSettings,
    site: str | None = None,
) -> dict[str, Any]:
    meta = resource["metadata"]
    labels = job_labels(resource, role, site)
    labels[LABEL_JOB_NAMESPACE] = meta["namespace"]
    labels[LABEL_JOB_UID] = meta["uid"]
    return {"name": name, "namespace": settings.site_namespace, "labels": labels}
