"""The one module that talks to the Kubernetes API (the kubernetes client)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fedkube.spec.approval import APPROVAL_PLURAL
from fedkube.spec.base import API_GROUP, API_VERSION
from kubernetes import client
from kubernetes.client.rest import ApiException

from fedkube_operator.desired import (
    aggregator_name,
    config_name,
    output_claim_name,
    trainer_name,
)
from fedkube_operator.labels import LABEL_JOB, LABEL_JOB_UID, LABEL_SITE
from fedkube_operator.permissions import (
    CLUSTER_REQUIRED,
    GANG_REQUIRED,
    REQUIRED,
    SITE_REQUIRED,
    Permission,
)
from fedkube_operator.site_report import SITE_KIND, SITE_PLURAL
from fedkube_operator.site_workers import LABEL_RANK, POD_GROUP_API, worker_name

log = logging.getLogger("fedkube.operator")


@dataclass
class Found:
    pods: dict[str, dict[str, Any]]
    has_service: bool
    config_map: dict[str, Any] | None
    has_claim: bool
    has_network_policies: bool
    # Where each pod runs, by its key in ``pods``: (namespace, name).
    locations: dict[str, tuple[str, str]] = field(default_factory=dict)
    terminating: set[str] = field(default_factory=set)
    site_config_map: dict[str, Any] | None = None
    # The job's other Services (a site's ranks), by name, wherever they are.
    services: set[str] = field(default_factory=set)


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.networking = client.NetworkingV1Api(self.api)

    def missing_permissions(
        self, namespaces: list[str], site_namespace: str = "", gang: bool = False
    ) -> list[str]:
        """What the operator needs and its credentials lack, asked of the API server (a
        SelfSubjectAccessReview each), in every namespace it watches ("" for all) and in
        the site's own (and, with a gang scheduler, its PodGroups in both)."""
        auth = client.AuthorizationV1Api(self.api)
        missing = []
        extra = GANG_REQUIRED if gang else ()
        for p in (*SITE_REQUIRED, *extra) if site_namespace else ():
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=_attributes(p, site_namespace)
                )
            )
            if not auth.create_self_subject_access_review(review).status.allowed:
                missing.append(f"{p} in the site's namespace {site_namespace}")
        for namespace in namespaces or [""]:
            for p in (*REQUIRED, *extra):
                review = client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(
                        resource_attributes=_attributes(p, namespace)
                    )
                )
                if not auth.create_self_subject_access_review(review).status.allowed:
                    missing.append(f"{p} in {namespace or 'every namespace'}")
        for p in CLUSTER_REQUIRED:
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=_attributes(p, ""))
            )
            if not auth.create_self_subject_access_review(review).status.allowed:
                missing.append(f"{p} (cluster-scoped)")
        return missing

    def federated_jobs_served(self, namespaces: list[str]) -> str | None:
        """None when the FederatedJob API answers a list; else what went wrong."""
        custom = client.CustomObjectsApi(self.api)
        try:
            for namespace in namespaces or [""]:
                if namespace:
                    custom.list_namespaced_custom_object(
                        "fedkube.io", "v1alpha1", namespace, "federatedjobs", limit=1
                    )
                else:
                    custom.list_cluster_custom_object(
                        "fedkube.io", "v1alpha1", "federatedjobs", limit=1
                    )
        except ApiException as e:
            return f"listing federatedjobs.fedkube.io failed: {e.status} {e.reason}"
        return None

    def observe(
        self,
        namespace: str,
        job: str,
        network_policies: bool = False,
        site_namespace: str = "",
        uid: str = "",
        site_config: str = "",
        gang: bool = False,
    ) -> Found:
        """What exists of one job, as plain dicts: in its namespace, and its trainers and
        manifest in the site's namespace (by the job's uid); with ``gang``, its PodGroups."""
        selector = f"{LABEL_JOB}={job}"
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector)
        by_name = {
            p.metadata.name: self.api.sanitize_for_serialization(p)
            for p in pods.items
            if p.metadata.deletion_timestamp is None
        }
        # Pods on their way out: one of a job's names cannot be made again until it is gone.
        terminating = {p.metadata.name for p in pods.items if p.metadata.deletion_timestamp}
        locations = {name: (namespace, name) for name in by_name}
        site_config_map = None
        if site_namespace and uid:
            held = self.core.list_namespaced_pod(
                site_namespace, label_selector=f"{LABEL_JOB_UID}={uid}"
            )
            for p in held.items:
                labels = p.metadata.labels or {}
                site = labels.get(LABEL_SITE)
                if not site:
                    continue
                # A worker pod is keyed as desired() names it; the trainer as trainer_name.
                rank = labels.get(LABEL_RANK, "0")
                key = trainer_name(job, site)
                key = worker_name(key, int(rank)) if rank != "0" else key
                if p.metadata.deletion_timestamp is None:
                    by_name[key] = self.api.sanitize_for_serialization(p)
                    locations[key] = (site_namespace, p.metadata.name)
                else:
                    terminating.add(key)
            site_config_map = self._config_map(site_namespace, site_config)
            held_services = self.core.list_namespaced_service(
                site_namespace, label_selector=f"{LABEL_JOB_UID}={uid}"
            )
            other_services = {s.metadata.name for s in held_services.items}
            if gang:
                other_services |= self._pod_groups(site_namespace, f"{LABEL_JOB_UID}={uid}")
        else:
            other_services = set()
        if gang:
            other_services |= self._pod_groups(namespace, selector)
        services = self.core.list_namespaced_service(namespace, label_selector=selector)
        claims = self.core.list_namespaced_persistent_volume_claim(
            namespace, label_selector=selector
        )
        return Found(
            pods=by_name,
            has_service=any(s.metadata.name == aggregator_name(job) for s in services.items),
            # Read by name, not by label: a ConfigMap someone else made under the job's name
            # (without the job's labels) is found, and rewritten.
            config_map=self._config_map(namespace, config_name(job)),
            has_claim=any(c.metadata.name == output_claim_name(job) for c in claims.items),
            has_network_policies=network_policies
            and bool(
                self.networking.list_namespaced_network_policy(
                    namespace, label_selector=selector
                ).items
            ),
            locations=locations,
            terminating=terminating,
            site_config_map=site_config_map,
            services=other_services | {s.metadata.name for s in services.items},
        )

    def _pod_groups(self, namespace: str, selector: str) -> set[str]:
        custom = client.CustomObjectsApi(self.api)
        found = custom.list_namespaced_custom_object(
            POD_GROUP_API[0], POD_GROUP_API[1], namespace, POD_GROUP_API[2],
            label_selector=selector,
        )  # fmt: skip
        return {item["metadata"]["name"] for item in found.get("items", [])}

    def site_objects(self, site_namespace: str, gang: bool = False) -> list[tuple[str, str, str]]:
        """What the operator made in the site's namespace for jobs: (kind, name, job uid);
        with ``gang``, PodGroups too."""
        selector = LABEL_JOB_UID
        out = []
        for kind, listed in (
            ("Pod", self.core.list_namespaced_pod(site_namespace, label_selector=selector)),
            (
                "ConfigMap",
                self.core.list_namespaced_config_map(site_namespace, label_selector=selector),
            ),
            (
                "NetworkPolicy",
                self.networking.list_namespaced_network_policy(
                    site_namespace, label_selector=selector
                ),
            ),
            ("Service", self.core.list_namespaced_service(site_namespace, label_selector=selector)),
        ):
            for item in listed.items:
                out.append((kind, item.metadata.name, item.metadata.labels[LABEL_JOB_UID]))
        if gang:
            custom = client.CustomObjectsApi(self.api)
            groups = custom.list_namespaced_custom_object(
                *POD_GROUP_API[:2], site_namespace, POD_GROUP_API[2], label_selector=selector
            )
            for item in groups.get("items", []):
                meta = item["metadata"]
                out.append(("PodGroup", meta["name"], meta["labels"][LABEL_JOB_UID]))
        return out

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete a Pod, ConfigMap, Service, NetworkPolicy or PodGroup; False when it was
        already gone."""
        try:
            if kind == "PodGroup":
                client.CustomObjectsApi(self.api).delete_namespaced_custom_object(
                    *POD_GROUP_API[:2], namespace, POD_GROUP_API[2], name
                )
            else:
                {
                    "Pod": self.core.delete_namespaced_pod,
                    "ConfigMap": self.core.delete_namespaced_config_map,
                    "Service": self.core.delete_namespaced_service,
                    "NetworkPolicy": self.networking.delete_namespaced_network_policy,
                }[kind](name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            return False
        log.info("deleted %s %s/%s", kind, namespace, name)
        return True

    def _config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(found))

    def approvals(self) -> list[dict[str, Any]]:
        """Every SiteApproval (cluster-scoped; few: one per job a site consented to)."""
        custom = client.CustomObjectsApi(self.api)
        try:
            listed = custom.list_cluster_custom_object(API_GROUP, API_VERSION, APPROVAL_PLURAL)
        except ApiException as e:
            if e.status != 404:
                raise
            # No SiteApproval CRD (crds.enabled false and not installed): nothing approves,
            # and jobs that need no consent still run.
            log.warning(
                "the SiteApproval CRD is not installed (siteapprovals.fedkube.io): no job that "
                "reads this site's data is approved; install the chart's CRDs"
            )
            return []
        return list(listed.get("items", []))

    def federated_jobs(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """The jobs this operator serves: in the namespaces it watches, or everywhere."""
        custom = client.CustomObjectsApi(self.api)
        if not namespaces:
            listed = custom.list_cluster_custom_object(API_GROUP, API_VERSION, "federatedjobs")
            return list(listed.get("items", []))
        items: list[dict[str, Any]] = []
        for ns in namespaces:
            listed = custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, ns, "federatedjobs"
            )
            items.extend(listed.get("items", []))
        return items

    def write_site_status(self, name: str, status: dict[str, Any]) -> None:
        """The site's FederatedSite, made on first use, its whole status replaced (a merge
        would keep jobs and datasets long gone). A conflict waits for the next write."""
        custom = client.CustomObjectsApi(self.api)
        try:
            found = custom.get_cluster_custom_object(API_GROUP, API_VERSION, SITE_PLURAL, name)
        except ApiException as e:
            if e.status != 404:
                raise
            body = {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": SITE_KIND,
                "metadata": {"name": name},
                "spec": {"site": name},
            }
            found = custom.create_cluster_custom_object(API_GROUP, API_VERSION, SITE_PLURAL, body)
        found["status"] = status
        custom.replace_cluster_custom_object_status(
            API_GROUP, API_VERSION, SITE_PLURAL, name, found
        )

    def replace(self, obj: dict[str, Any]) -> None:
        """Write over an existing ConfigMap (the job's manifest)."""
        meta = obj["metadata"]
        self.core.replace_namespaced_config_map(meta["name"], meta["namespace"], obj)
        log.info("rewrote %s %s/%s", obj["kind"], meta["namespace"], meta["name"])

    def create(self, obj: dict[str, Any]) -> bool:
        """Create; an object that already exists is left as it is (names are deterministic)."""
        ns = obj["metadata"]["namespace"]
        if obj["kind"] == "PodGroup":
            custom = client.CustomObjectsApi(self.api)
            try:
                custom.create_namespaced_custom_object(
                    *POD_GROUP_API[:2], ns, POD_GROUP_API[2], obj
                )
            except ApiException as e:
                if e.status == 409:
                    return False
                raise
            log.info("created PodGroup %s/%s", ns, obj["metadata"]["name"])
            return True
        create = {
            "Pod": self.core.create_namespaced_pod,
            "Service": self.core.create_namespaced_service,
            "ConfigMap": self.core.create_namespaced_config_map,
            "PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
            "NetworkPolicy": self.networking.create_namespaced_network_policy,
        }[obj["kind"]]
        try:
            create(ns, obj)
            log.info("created %s %s/%s", obj["kind"], ns, obj["metadata"]["name"])
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise


def _attributes(p: Permission, namespace: str) -> client.V1ResourceAttributes:
    resource, _, subresource = p.resource.partition("/")
    return client.V1ResourceAttributes(
        group=p.group,
        resource=resource,
        subresource=subresource or None,
        verb=p.verb,
        namespace=namespace or None,
    )


class LeaseStore:
    """The operator's Lease (coordination.k8s.io) in its own namespace."""

    def __init__(self, namespace: str, name: str, api: client.ApiClient | None = None) -> None:
        self.namespace, self.name = namespace, name
        self.api = api or client.ApiClient()
        self.coordination = client.CoordinationV1Api(self.api)

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(spec, resourceVersion); (None, None) when there is no Lease yet."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None, None
            raise
        body = self.api.sanitize_for_serialization(lease)
        return body.get("spec") or {}, lease.metadata.resource_version

    def write(self, spec: dict[str, Any], version: str | None) -> bool:
        """Create it, or replace the version read; False when another replica wrote first."""
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            if version is None:
                self.coordination.create_namespaced_lease(self.namespace, body)
            else:
                body["metadata"]["resourceVersion"] = version
                self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
            return True
        except ApiException as e:
            if e.status in (409, 422):
                return False
            raise
