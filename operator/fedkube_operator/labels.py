"""The labels on what the operator makes for a job, and how they select it."""

from __future__ import annotations

LABEL_JOB = "fedkube.io/job"
LABEL_ROLE = "fedkube.io/role"
LABEL_SITE = "fedkube.io/site"
# On what runs in the site's namespace for a job elsewhere: no ownerReference can cross
# namespaces, so these tie it to the job, and the sweep removes it once the job is gone.
LABEL_JOB_NAMESPACE = "fedkube.io/job-namespace"
LABEL_JOB_UID = "fedkube.io/job-uid"


def job_labels(resource: dict[str, object], role: str, site: str | None = None) -> dict[str, str]:
    meta: dict[str, str] = resource["metadata"]  # type: ignore[assignment]
    labels = {
        "app.kubernetes.io/name": "fedkube",
        "app.kubernetes.io/managed-by": "fedkube-operator",
        LABEL_JOB: meta["name"],
        LABEL_ROLE: role,
    }
    if site:
        labels[LABEL_SITE] = site
    return labels
