"""Pure: a FederatedJob resource in, the Kubernetes objects that run it out.

Names are deterministic, so applying the same job twice (or after an operator restart)
creates nothing twice; every object carries an ownerReference to the job, so deleting the job
deletes them through the garbage collector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from fedkube.spec.base import API_GROUP, API_VERSION, KIND
from fedkube.spec.job import FederatedJob
from fedkube.spec.sites import SiteSpec
from fedkube.spec.terms import terms_digest
from fedkube.transport.http_endpoints import PROGRESS_TOKEN_ENV

from fedkube_operator.labels import LABEL_JOB, LABEL_ROLE, job_labels
from fedkube_operator.pod_shape import job_pod
from fedkube_operator.rollout import spec_digest, stamp
from fedkube_operator.settings import OperatorSettings
from fedkube_operator.site_mounts import site_data, site_state, trusted_cas
from fedkube_operator.site_placement import (
    held_by_site,
    site_config_name,
    site_meta,
    site_trainer_name,
)
from fedkube_operator.site_workers import pod_group, with_workers, worker_name

MANIFEST_DIR = "/etc/fedkube"
MANIFEST_FILE = "job.yaml"
TLS_DIR = "/etc/fedkube-tls"
STATE_DIR = "/var/lib/fedkube"
# After success the aggregator keeps serving /progress this long, so the operator reads the
# final round and metrics before the pod goes away.
AGGREGATOR_LINGER_SECONDS = 30


@dataclass
class Desired:
    config_map: dict[str, Any]
    service: dict[str, Any] | None
    # The job's own claim for the aggregator's outputs and checkpoints (None: the job names
    # one in spec.checkpoint.claimName, or runs no aggregator here).
    claim: dict[str, Any] | None = None
    # Keyed by trainer_name/aggregator_name, wherever the pod runs.
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The site's own copy of the manifest, for trainers in the site's namespace.
    site_config_map: dict[str, Any] | None = None
    # The headless Services of sites trained by several pods (their ranks), and with a gang
    # scheduler their PodGroups.
    services: list[dict[str, Any]] = field(default_factory=list)


def aggregator_name(job: str) -> str:
    return f"{job}-aggregator"


def output_claim_name(job: str) -> str:
    return f"{job}-output"


def output_claim(job: FederatedJob) -> str:
    """The claim the aggregator writes its model, result and checkpoints to."""
    return job.spec.checkpoint.claim_name or output_claim_name(job.name)


def trainer_name(job: str, site: str) -> str:
    return f"{job}-trainer-{site}"


def config_name(job: str) -> str:
    return f"{job}-config"


def owner_reference(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource["metadata"]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(
    resource: dict[str, Any], name: str, role: str, site: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": resource["metadata"]["namespace"],
        "labels": job_labels(resource, role, site),
        "ownerReferences": [owner_reference(resource)],
    }


def aggregator_endpoint(job: FederatedJob, namespace: str, settings: OperatorSettings) -> str:
    if job.spec.aggregator.endpoint:
        return job.spec.aggregator.endpoint
    host = settings.aggregator_host.format(service=aggregator_name(job.name), namespace=namespace)
    return f"{host}:{job.spec.aggregator.port}"


def _common_volumes(config: str) -> list[dict[str, Any]]:
    return [
        {"name": "job", "configMap": {"name": config}},
        {"name": "tmp", "emptyDir": {}},
    ]


_COMMON_MOUNTS = [
    {"name": "job", "mountPath": MANIFEST_DIR, "readOnly": True},
    {"name": "tmp", "mountPath": "/tmp"},
]


def _tls(secret: str | None) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """(arguments, volumes, mounts) for a pod's TLS Secret; none means clear text."""
    if secret is None:
        return [], [], []
    volume = {
        "name": "tls",
        # Readable by the pod's group (fsGroup) only: the key never leaves the pod's user.
        "secret": {"secretName": secret, "defaultMode": 0o440},
    }
    mount = {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}
    return ["--tls-dir", TLS_DIR], [volume], [mount]


def _progress_env(resource: dict[str, Any], settings: OperatorSettings) -> list[dict[str, Any]]:
    """The job's /progress token, for a pod that serves /progress to the operator alone."""
    token = settings.progress_token(resource)
    return [{"name": PROGRESS_TOKEN_ENV, "value": token}] if token else []


def aggregator_pod(
    resource: dict[str, Any], job: FederatedJob, settings: OperatorSettings
) -> dict[str, Any]:
    spec = job.spec
    # Never an emptyDir: the model must outlive the pod (podCleanup deletes pods).
    state = {"persistentVolumeClaim": {"claimName": output_claim(job)}}
    tls = spec.security.mutual_tls
    tls_args, tls_volumes, tls_mounts = _tls(tls.aggregator_secret(job.name) if tls else None)
    container = {
        "name": "aggregator",
        "image": settings.image,
        "command": [
            "fedkube",
            "aggregator",
            "--manifest",
            f"{MANIFEST_DIR}/{MANIFEST_FILE}",
            "--port",
            str(spec.aggregator.port),
            "--http-port",
            str(spec.aggregator.http_port),
            "--job-namespace",
            resource["metadata"]["namespace"],
            "--checkpoint-dir",
            f"{STATE_DIR}/checkpoints",
            "--output-dir",
            f"{STATE_DIR}/output",
            "--linger-seconds",
            str(AGGREGATOR_LINGER_SECONDS),
            # Without security.mutualTls the job asked for clear text inside the cluster.
            *(tls_args or ["--allow-plaintext"]),
            *settings.plugin_args(),
        ],
        "ports": [
            {"name": "grpc", "containerPort": spec.aggregator.port},
            {"name": "http", "containerPort": spec.aggregator.http_port},
        ],
        "volumeMounts": [
            *_COMMON_MOUNTS,
            {"name": "state", "mountPath": STATE_DIR},
            *tls_mounts,
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
        "env": _progress_env(resource, settings),
    }
    volumes = [*_common_volumes(config_name(job.name)), {"name": "state", **state}, *tls_volumes]
    meta = _meta(resource, aggregator_name(job.name), "aggregator")
    # A plain Prometheus with Kubernetes service discovery scrapes pods annotated so; the
    # chart's PodMonitor selects the same pods by their role label and the "http" port.
    meta["annotations"] = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.aggregator.http_port),
        "prometheus.io/path": "/metrics",
    }
    return job_pod(meta, container, volumes, settings, spec.pods.aggregator)


def trainer_pod(
    resource: dict[str, Any],
    job: FederatedJob,
    site: SiteSpec,
    namespace: str,
    settings: OperatorSettings,
) -> dict[str, Any]:
    tls = job.spec.security.mutual_tls
    # A trainer that reads the site's data runs in the site's namespace, with the site's own
    # certificate and its copy of the manifest; nothing of the tenant's reaches it.
    held = held_by_site(site, settings)
    secret = None
    if tls is not None:
        secret = settings.site_secret(site.name) if held else tls.site_secret(job.name, site.name)
    tls_args, tls_volumes, tls_mounts = _tls(secret)
    state = site_state(job, namespace, site, settings)
    data = site_data(settings)
    # The aggregator is elsewhere: this trainer relays the job's progress to the operator.
    remote = job.spec.aggregator.endpoint is not None
    relay_args = (
        [
            "--progress-port",
            str(settings.progress_relay_port),
            "--progress-linger-seconds",
            str(AGGREGATOR_LINGER_SECONDS),
        ]
        if remote
        else []
    )
    container = {
        "name": "trainer",
        "image": settings.image,
        "command": [
            "fedkube",
            "trainer",
            "--manifest",
            f"{MANIFEST_DIR}/{MANIFEST_FILE}",
            "--site",
            site.name,
            "--aggregator",
            aggregator_endpoint(job, namespace, settings),
            # The terms this site admitted: a manifest that differs (a ConfigMap edited by
            # whoever can edit the namespace's ConfigMaps) trains nothing here.
            "--terms-sha256",
            terms_digest(job),
            # Without mutual TLS the job stays in this cluster (validation requires it across
            # organisations): clear text to the in-cluster Service, asked for explicitly.
            *(tls_args or ["--allow-plaintext"]),
            *settings.plugin_args(),
            *data.args,
            *state.args,
            *(
                ["--epsilon-cap", f"{settings.epsilon_cap:g}"]
                if settings.epsilon_cap is not None
                else []
            ),
            *trusted_cas(site, settings),
            *relay_args,
        ],
        "env": [
            {"name": "FEDKUBE_TORCH_THREADS", "value": "1"},
            *(_progress_env(resource, settings) if remote else []),
        ],
        "volumeMounts": [*_COMMON_MOUNTS, *tls_mounts, *data.mounts, *state.mounts],
    }
    if remote:
        container["ports"] = [{"name": "progress", "containerPort": settings.progress_relay_port}]
    if held:
        name = site_trainer_name(namespace, job.name, site.name)
        meta = site_meta(resource, name, "trainer", settings, site.name)
        config = site_config_name(namespace, job.name)
    else:
        meta = _meta(resource, trainer_name(job.name, site.name), "trainer", site.name)
        config = config_name(job.name)
    return job_pod(
        meta,
        container,
        [*_common_volumes(config), *tls_volumes, *data.volumes, *state.volumes],
        settings,
        job.spec.pods.trainer,
    )


def _manifest(resource: dict[str, Any]) -> dict[str, str]:
    """The job as the pods read it: the same manifest, only what the engine needs."""
    document = {
        "apiVersion": resource["apiVersion"],
        "kind": resource["kind"],
        "metadata": {"name": resource["metadata"]["name"]},
        "spec": resource["spec"],
    }
    return {MANIFEST_FILE: yaml.safe_dump(document, sort_keys=True)}


def config_map(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(resource, config_name(resource["metadata"]["name"]), "config"),
        "data": _manifest(resource),
    }


def site_config_map(resource: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The site's own copy of the manifest, in its namespace, for its trainers to read."""
    meta = resource["metadata"]
    name = site_config_name(meta["namespace"], meta["name"])
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": site_meta(resource, name, "config", settings),
        "data": _manifest(resource),
    }


def aggregator_service(resource: dict[str, Any], job: FederatedJob) -> dict[str, Any]:
    """The aggregator's Service, of the type the job asks (site policy allowing)."""
    agg = job.spec.aggregator
    grpc: dict[str, Any] = {"name": "grpc", "port": agg.port, "targetPort": "grpc"}
    if agg.service.type == "NodePort" and agg.service.node_port is not None:
        grpc["nodePort"] = agg.service.node_port
    spec: dict[str, Any] = {
        "type": agg.service.type,
        "selector": {LABEL_JOB: job.name, LABEL_ROLE: "aggregator"},
        "ports": [grpc, {"name": "http", "port": agg.http_port, "targetPort": "http"}],
    }
    if agg.service.type == "LoadBalancer" and agg.service.load_balancer_source_ranges:
        spec["loadBalancerSourceRanges"] = list(agg.service.load_balancer_source_ranges)
    meta = _meta(resource, aggregator_name(job.name), "aggregator")
    if agg.service.annotations:
        meta["annotations"] = dict(agg.service.annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def job_claim(resource: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The job's own claim for its outputs: owned by the job, so it goes when the job is
    deleted, and never with the pods."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": settings.job_storage_size}},
    }
    if settings.job_storage_class:
        spec["storageClassName"] = settings.job_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(resource, output_claim_name(resource["metadata"]["name"]), "output"),
        "spec": spec,
    }


def desired(resource: dict[str, Any], job: FederatedJob, settings: OperatorSettings) -> Desired:
    namespace = resource["metadata"]["namespace"]
    local = job.spec.aggregator.endpoint is None
    out = Desired(config_map(resource), aggregator_service(resource, job) if local else None)
    if local:
        out.pods[aggregator_name(job.name)] = aggregator_pod(resource, job, settings)
        if job.spec.checkpoint.claim_name is None:
            out.claim = job_claim(resource, settings)
    for site in (s for s in job.spec.sites if not s.remote):
        key = trainer_name(job.name, site.name)
        out.pods[key] = trainer = trainer_pod(resource, job, site, namespace, settings)
        if job.spec.pods.trainer.workers > 1:
            workers, ranks = with_workers(trainer, job, site, settings)
            # Keyed like the trainer: by the job's names, wherever the pods run.
            out.pods.update({worker_name(key, rank): pod for rank, pod in workers.items()})
            out.services.append(ranks)
            if settings.gang_scheduler:
                out.services.append(pod_group(trainer, job.spec.pods.trainer.workers))
        if held_by_site(site, settings):
            out.site_config_map = site_config_map(resource, settings)
    digest = spec_digest(resource)
    for pod in out.pods.values():
        stamp(pod, digest)
    return out
