"""Pure: a site trained by several pods (``spec.pods.trainer.workers``): the worker pods
beside its trainer, the headless Service they find the trainer by, and what lets them talk.

The trainer is rank 0: it reads the site's data, talks to the aggregator, and waits on
``--workers-port`` for the others. Each worker pod (``fedkube trainer-worker``) runs the
engine image with the job's manifest and nothing else of the site's (no data volume, no
certificate, no state): the trainer hands it the site's training rows. The workers run where
the trainer runs (the same namespace, the job's pod settings) and are made with it, all at
once. With a gang scheduler at the site (Helm ``site.gangScheduler``, e.g. the
scheduler-plugins' coscheduling), the ranks carry its pod-group label and scheduler name, so
they are placed together or not at all; without one, the trainer waits for its workers, and
a round it cannot train in time closes without the site.
"""

from __future__ import annotations

import copy
from typing import Any

from fedkube.spec.job import FederatedJob
from fedkube.spec.sites import SiteSpec

from fedkube_operator.labels import LABEL_JOB, LABEL_ROLE, LABEL_SITE
from fedkube_operator.settings import OperatorSettings

LABEL_RANK = "fedkube.io/rank"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
# The scheduler-plugins' PodGroup: group, version, plural.
POD_GROUP_API = ("scheduling.x-k8s.io", "v1alpha1", "podgroups")
# The trainer's rendezvous port: the base plus the site's index, so that the sites of one
# job never share one where pods share a network (host networking, the test node agent).
WORKERS_PORT = 29400


def workers_port(job: FederatedJob, site: SiteSpec) -> int:
    return WORKERS_PORT + [s.name for s in job.spec.sites].index(site.name)


def worker_name(trainer: str, rank: int) -> str:
    return f"{trainer}-w{rank}"


def ranks_service_name(trainer: str) -> str:
    return f"{trainer}-ranks"


def _ranks_selector(trainer_pod: dict[str, Any]) -> dict[str, str]:
    labels = trainer_pod["metadata"]["labels"]
    return {k: labels[k] for k in (LABEL_JOB, LABEL_SITE) if k in labels}


def _gang(pod: dict[str, Any], group: str, settings: OperatorSettings) -> None:
    if settings.gang_scheduler:
        pod["metadata"]["labels"][POD_GROUP_LABEL] = group
        pod["spec"]["schedulerName"] = settings.gang_scheduler


def _ranks_meta(trainer_pod: dict[str, Any], name: str) -> dict[str, Any]:
    """Where the trainer is, labelled and owned as it is, in the role of the site's ranks."""
    meta = trainer_pod["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {**meta["labels"], LABEL_ROLE: "ranks"},
        **({"ownerReferences": meta["ownerReferences"]} if "ownerReferences" in meta else {}),
    }


def ranks_service(trainer_pod: dict[str, Any], port: int) -> dict[str, Any]:
    """The headless Service the workers reach the trainer by (its pod's own address)."""
    selector = {**_ranks_selector(trainer_pod), LABEL_ROLE: "trainer"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _ranks_meta(trainer_pod, ranks_service_name(trainer_pod["metadata"]["name"])),
        "spec": {
            "clusterIP": "None",
            # The workers connect before the trainer reports ready.
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        },
    }


def with_workers(
    trainer_pod: dict[str, Any],
    job: FederatedJob,
    site: SiteSpec,
    settings: OperatorSettings,
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """The site's worker pods (by rank, 1 to workers - 1) and their Service; ``trainer_pod``
    is made rank 0 (told to wait for them) in place."""
    workers = job.spec.pods.trainer.workers
    port = workers_port(job, site)
    name = trainer_pod["metadata"]["name"]
    namespace = trainer_pod["metadata"]["namespace"]
    container = trainer_pod["spec"]["containers"][0]
    container["command"] = [*container["command"], "--workers-port", str(port)]
    container.setdefault("ports", []).append({"name": "rendezvous", "containerPort": port})
    trainer_pod["metadata"]["labels"][LABEL_RANK] = "0"
    _gang(trainer_pod, name, settings)
    host = settings.workers_host.format(service=ranks_service_name(name), namespace=namespace)
    pods = {}
    for rank in range(1, workers):
        pod = copy.deepcopy(trainer_pod)
        pod["metadata"]["name"] = worker_name(name, rank)
        pod["metadata"]["labels"].update({LABEL_ROLE: "worker", LABEL_RANK: str(rank)})
        worker = pod["spec"]["containers"][0]
        manifest = worker["command"][worker["command"].index("--manifest") + 1]
        worker["name"] = "worker"
        worker["command"] = [
            "fedkube",
            "trainer-worker",
            "--manifest",
            manifest,
            "--site",
            site.name,
            "--rank",
            str(rank),
            "--rendezvous",
            f"tcp://{host}:{port}",
            *settings.plugin_args(),
        ]
        worker.pop("ports", None)
        # The manifest and a scratch folder; none of the site's volumes (its data, state or
        # certificate): the rows come from the trainer.
        keep = {"job", "tmp"}
        pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] in keep]
        worker["volumeMounts"] = [m for m in worker["volumeMounts"] if m["name"] in keep]
        worker["env"] = [e for e in worker.get("env", []) if e["name"] == "FEDKUBE_TORCH_THREADS"]
        pods[rank] = pod
    return pods, ranks_service(trainer_pod, port)


def pod_group(trainer_pod: dict[str, Any], workers: int) -> dict[str, Any]:
    """The site's ranks as one gang: none is bound to a node until all can be."""
    return {
        "apiVersion": f"{POD_GROUP_API[0]}/{POD_GROUP_API[1]}",
        "kind": "PodGroup",
        "metadata": _ranks_meta(trainer_pod, trainer_pod["metadata"]["name"]),
        "spec": {"minMember": workers},
    }


def ranks_network_policy(job: str, site: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The site's ranks reach one another on any port (gloo connects every pair), and
    nothing else gains a way in: NetworkPolicies add up, so the trainers' own still holds."""
    ranks = {
        "matchLabels": {LABEL_JOB: job, LABEL_SITE: site},
        "matchExpressions": [
            {"key": LABEL_ROLE, "operator": "In", "values": ["trainer", "worker"]}
        ],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": ranks,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": ranks}]}],
            "egress": [{"to": [{"podSelector": ranks}]}],
        },
    }
