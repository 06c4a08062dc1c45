"""What the operator may do in the API, as data: the chart's RBAC grants exactly this (a test
compares them) and `fedkube-operator --check` (the chart's `helm test`) asks the API server
whether the operator's ServiceAccount really has it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    group: str  # "" is the core API group
    resource: str
    verb: str

    def __str__(self) -> str:
        where = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {where}"


def _each(group: str, resources: tuple[str, ...], verbs: tuple[str, ...]) -> list[Permission]:
    return [Permission(group, r, v) for r in resources for v in verbs]


_OBSERVE_CREATE = ("get", "list", "watch", "create")

REQUIRED: tuple[Permission, ...] = (
    # The jobs: watched, annotated by kopf (its bookkeeping), status written.
    *_each("fedkube.io", ("federatedjobs",), ("get", "list", "watch", "patch")),
    *_each("fedkube.io", ("federatedjobs/status",), ("get", "patch")),
    # What a job runs on: created, observed, and failed or finished pods removed.
    *_each("", ("pods",), ("get", "list", "watch", "create", "delete")),
    *_each("", ("services", "persistentvolumeclaims"), _OBSERVE_CREATE),
    # The job's manifest: rewritten when the job's terms change (or someone else wrote it).
    *_each("", ("configmaps",), (*_OBSERVE_CREATE, "update")),
    # Each job's NetworkPolicies (Helm networkPolicy.enabled).
    *_each("networking.k8s.io", ("networkpolicies",), _OBSERVE_CREATE),
    # Events on the main transitions.
    *_each("", ("events",), ("create", "patch")),
    *_each("events.k8s.io", ("events",), ("create", "patch")),
)

# With a gang scheduler at the site (Helm site.gangScheduler), in the job's namespaces and in
# the site's: each site's ranks (a trainer and its worker pods) as one PodGroup.
GANG_REQUIRED: tuple[Permission, ...] = (
    *_each("scheduling.x-k8s.io", ("podgroups",), ("get", "list", "create", "delete")),
)

# Cluster-scoped, whatever namespaces the operator watches: the site's consents, and the
# site's status (FederatedSite), which it keeps.
CLUSTER_REQUIRED: tuple[Permission, ...] = (
    *_each("fedkube.io", ("siteapprovals",), ("get", "list", "watch")),
    *_each("fedkube.io", ("federatedsites",), ("get", "create")),
    *_each("fedkube.io", ("federatedsites/status",), ("update",)),
)

# In the site's own namespace (the release's): the trainers that read the site's data, the
# site's copy of their job's manifest and their NetworkPolicies; deleted with the job.
SITE_REQUIRED: tuple[Permission, ...] = (
    *_each("", ("pods", "configmaps"), ("get", "list", "watch", "create", "update", "delete")),
    # The headless Service a site's worker pods find its trainer by.
    *_each("", ("services",), ("get", "list", "create", "delete")),
    *_each("networking.k8s.io", ("networkpolicies",), ("get", "list", "create", "delete")),
    # The replicas' leader election (Helm operator.leaderElection): one Lease of the release.
    *_each("coordination.k8s.io", ("leases",), ("get", "create", "update")),
)
