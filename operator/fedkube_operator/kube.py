"""The one module that talks to the Kubernetes API (the kubernetes client)."""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from fedkube_operator.desired import LABEL_JOB, aggregator_name, config_name, output_claim_name
from fedkube_operator.permissions import REQUIRED, Permission

log = logging.getLogger("fedkube.operator")


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.networking = client.NetworkingV1Api(self.api)

    def missing_permissions(self, namespaces: list[str]) -> list[str]:
        """What the operator needs and its credentials lack, asked of the API server (a
        SelfSubjectAccessReview each), in every namespace it watches ("" for all)."""
        auth = client.AuthorizationV1Api(self.api)
        missing = []
        for namespace in namespaces or [""]:
            for p in REQUIRED:
                review = client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(
                        resource_attributes=_attributes(p, namespace)
                    )
                )
                if not auth.create_self_subject_access_review(review).status.allowed:
                    missing.append(f"{p} in {namespace or 'every namespace'}")
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
        self, namespace: str, job: str, network_policies: bool = False
    ) -> tuple[dict[str, dict[str, Any]], bool, bool, bool, bool]:
        """(pods by name, the aggregator Service exists, the ConfigMap exists, the job's
        output claim exists, its NetworkPolicies exist: looked for when asked), as plain
        dicts."""
        selector = f"{LABEL_JOB}={job}"
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector)
        by_name = {
            p.metadata.name: self.api.sanitize_for_serialization(p)
            for p in pods.items
            if p.metadata.deletion_timestamp is None
        }
        services = self.core.list_namespaced_service(namespace, label_selector=selector)
        has_service = any(s.metadata.name == aggregator_name(job) for s in services.items)
        maps = self.core.list_namespaced_config_map(namespace, label_selector=selector)
        has_config = any(m.metadata.name == config_name(job) for m in maps.items)
        claims = self.core.list_namespaced_persistent_volume_claim(
            namespace, label_selector=selector
        )
        has_claim = any(c.metadata.name == output_claim_name(job) for c in claims.items)
        has_policies = network_policies and bool(
            self.networking.list_namespaced_network_policy(namespace, label_selector=selector).items
        )
        return by_name, has_service, has_config, has_claim, has_policies

    def create(self, obj: dict[str, Any]) -> bool:
        """Create; an object that already exists is left as it is (names are deterministic)."""
        ns = obj["metadata"]["namespace"]
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

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace)
            log.info("deleted pod %s/%s", namespace, name)
        except ApiException as e:
            if e.status != 404:
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
