"""A job's NetworkPolicies (Helm networkPolicy.enabled): its trainers may reach only its
aggregator (and DNS); its aggregator accepts only its trainers, the remote sites' addresses
the site admin lists, and the operator (progress) and scrapers on its HTTP port."""

from __future__ import annotations

from typing import Any

from fedkube.spec.job import FederatedJob

from fedkube_operator.desired import _meta, aggregator_name
from fedkube_operator.labels import LABEL_JOB, LABEL_JOB_UID, LABEL_ROLE
from fedkube_operator.settings import OperatorSettings
from fedkube_operator.site_placement import held_by_site, site_meta, site_object_name
from fedkube_operator.site_workers import ranks_network_policy

_NAMESPACE_LABEL = "kubernetes.io/metadata.name"
_DNS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def _policy(meta: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": spec}  # fmt: skip


def _in(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {_NAMESPACE_LABEL: namespace}}}


def _pods(job: FederatedJob, role: str) -> dict[str, Any]:
    return {"matchLabels": {LABEL_JOB: job.name, LABEL_ROLE: role}}


def network_policies(
    resource: dict[str, Any], job: FederatedJob, settings: OperatorSettings
) -> list[dict[str, Any]]:
    if not settings.network_policy:
        return []
    agg = job.spec.aggregator
    if agg.endpoint is None:  # the aggregator runs here: trainers dial its pod
        to_aggregator: list[dict[str, Any]] = [
            {"to": [{"podSelector": _pods(job, "aggregator")}],
             "ports": [{"protocol": "TCP", "port": agg.port}]}
        ]  # fmt: skip
    else:  # it runs at another organisation: the addresses the site admin allows
        port = int(agg.endpoint.rsplit(":", 1)[1])
        to_aggregator = [
            {"to": [{"ipBlock": {"cidr": c}} for c in settings.remote_aggregator_cidrs],
             "ports": [{"protocol": "TCP", "port": port}]}
        ]  # fmt: skip
    operator_only = [_in(settings.operator_namespace)] if settings.operator_namespace else []
    # Only the operator dials a trainer: for the progress it relays when the aggregator is
    # elsewhere.
    relay_in = (
        [{"from": operator_only,
          "ports": [{"protocol": "TCP", "port": settings.progress_relay_port}]}]
        if agg.endpoint is not None
        else []
    )  # fmt: skip
    trainers = {
        "policyTypes": ["Ingress", "Egress"],
        "ingress": relay_in,
        "egress": [*to_aggregator, {"ports": _DNS}],
    }
    policies = [
        _policy(
            _meta(resource, f"{job.name}-trainers", "trainer"),
            {"podSelector": _pods(job, "trainer"), **trainers},
        )
    ]
    # Trainers that read the site's data run in the site's namespace: their own policy there,
    # and the aggregator lets them in from it.
    held = any(held_by_site(s, settings) for s in job.spec.sites)
    uid = resource["metadata"].get("uid", "")
    held_pods = {"matchLabels": {LABEL_JOB_UID: uid, LABEL_ROLE: "trainer"}}
    if held:
        egress = trainers["egress"]
        if agg.endpoint is None:
            egress = [
                {"to": [{**_in(resource["metadata"]["namespace"]),
                         "podSelector": _pods(job, "aggregator")}],
                 "ports": [{"protocol": "TCP", "port": agg.port}]},
                {"ports": _DNS},
            ]  # fmt: skip
        name = site_object_name(resource["metadata"]["namespace"], job.name, "trainers")
        policies.append(
            _policy(
                site_meta(resource, name, "trainer", settings),
                {"podSelector": held_pods, **trainers, "egress": egress},
            )
        )
    for site in (s for s in job.spec.sites if not s.remote and job.spec.pods.trainer.workers > 1):
        if held_by_site(site, settings):
            ns = resource["metadata"]["namespace"]
            name = site_object_name(ns, job.name, f"{site.name}-ranks")
            meta = site_meta(resource, name, "ranks", settings, site.name)
        else:
            meta = _meta(resource, f"{job.name}-{site.name}-ranks", "ranks", site.name)
        policies.append(ranks_network_policy(job.name, site.name, meta))
    if agg.endpoint is None:
        from_trainers: list[dict[str, Any]] = [{"podSelector": _pods(job, "trainer")}]
        if held:
            from_trainers.append({**_in(settings.site_namespace), "podSelector": held_pods})
        from_remote = [{"ipBlock": {"cidr": c}} for c in settings.aggregator_ingress_cidrs]
        http_from = [
            _in(ns)
            for ns in dict.fromkeys([settings.operator_namespace, *settings.scrape_namespaces])
            if ns
        ]
        policies.append(
            _policy(
                _meta(resource, aggregator_name(job.name), "aggregator"),
                {
                    "podSelector": _pods(job, "aggregator"),
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [
                        {"from": [*from_trainers, *from_remote],
                         "ports": [{"protocol": "TCP", "port": agg.port}]},
                        {"from": http_from,
                         "ports": [{"protocol": "TCP", "port": agg.http_port}]},
                    ],
                    "egress": [{"ports": _DNS}],  # it dials no one
                },
            )
        )  # fmt: skip
    return policies
