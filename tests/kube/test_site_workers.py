"""A site trained by two pods on the real control plane: the operator makes each site's worker
pod and headless Service, the worker joins its trainer, the job succeeds and every rank ends
Succeeded."""

from __future__ import annotations

import json
import time

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import apply, example, pods, wait_job, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess


def test_a_site_with_two_worker_pods_trains_to_succeeded(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    doc = with_free_ports(example("ranks", rounds=3, podCleanup="none"))
    doc["spec"]["sites"] = doc["spec"]["sites"][:2]
    doc["spec"]["minSitesPerRound"] = 2
    doc["spec"]["pods"] = {"trainer": {"workers": 2}}
    apply(control_plane, namespace, doc)
    job = wait_job(
        control_plane,
        namespace,
        "ranks",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=operator.log,
    )
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["round"] == 3
    sites = [s["name"] for s in doc["spec"]["sites"]]
    # The workers end when their trainer, done, tells them to: moments after the job.
    deadline = time.monotonic() + 120
    while True:
        found = pods(control_plane, namespace, "ranks")
        phases = {n: p["status"].get("phase") for n, p in found.items() if "-trainer-" in n}
        if set(phases.values()) == {"Succeeded"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(phases) == 4, phases
    for site in sites:
        trainer, worker = f"ranks-trainer-{site}", f"ranks-trainer-{site}-w1"
        assert found[worker]["metadata"]["labels"]["fedkube.io/role"] == "worker"
        assert phases[worker] == phases[trainer] == "Succeeded", phases
        said = node_agent.logs(namespace, trainer)
        assert f"site {site} trains with 2 workers (torch.distributed, gloo" in said
    services = json.loads(
        control_plane.kubectl("get", "svc", "-n", namespace, "-o", "json").stdout
    )["items"]
    headless = {s["metadata"]["name"]: s for s in services if s["spec"].get("clusterIP") == "None"}
    assert set(headless) == {f"ranks-trainer-{site}-ranks" for site in sites}
