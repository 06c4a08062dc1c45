"""Two clusters, one job: the coordinator's cluster runs the aggregator and two sites; a second
hospital's cluster applies the job with the aggregator's endpoint and runs its own site."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

from fedkube.security.certs import create_consortium

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import apply, example, result_file, wait_job, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess


def test_a_site_in_a_second_cluster_joins_every_round(
    tmp_path: Path,
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    second_control_plane: ControlPlane,
    second_node_agent: NodeAgent,
    second_operator: OperatorProcess,
) -> None:
    ns = f"x-{uuid.uuid4().hex[:6]}"
    for cp in (control_plane, second_control_plane):
        cp.kubectl("create", "namespace", ns)
    coordinator = with_free_ports(example("consortium", rounds=8, minSitesPerRound=3))
    sites = coordinator["spec"]["sites"][:3]
    for i, s in enumerate(sites):
        s["data"]["sklearn"]["numPartitions"] = 3
        s["data"]["sklearn"]["partition"] = i
    remote_site = copy.deepcopy(sites[2])
    sites[2] = {"name": remote_site["name"], "remote": True}
    coordinator["spec"]["sites"] = sites
    # The second hospital applies the same job: only its own site, and where to find the aggregator.
    second = copy.deepcopy(coordinator)
    agg = coordinator["spec"]["aggregator"]
    second["spec"]["aggregator"] = {**agg, "endpoint": f"127.0.0.1:{agg['port']}"}
    second["spec"]["sites"] = [remote_site]
    second["spec"]["minSitesPerRound"] = 1
    # Across organisations mutual TLS is required: each cluster holds only its own Secrets.
    for doc in (coordinator, second):
        doc["spec"]["security"] = {"mutualTls": {}}
    names = [s["name"] for s in sites[:2]] + [remote_site["name"]]
    create_consortium(tmp_path, "consortium", names, ["127.0.0.1", "localhost"])
    secrets = [(control_plane, "consortium-aggregator-tls", tmp_path / "aggregator")]
    for name in names:
        cluster = second_control_plane if name == remote_site["name"] else control_plane
        secrets.append((cluster, f"consortium-{name}-tls", tmp_path / "sites" / name))
    for cluster, secret, folder in secrets:
        cluster.kubectl("create", "secret", "generic", secret, "-n", ns, f"--from-file={folder}")

    apply(control_plane, ns, coordinator)
    apply(second_control_plane, ns, second)
    first = wait_job(
        control_plane,
        ns,
        "consortium",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=operator.log,
    )["status"]
    other = wait_job(
        second_control_plane,
        ns,
        "consortium",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=second_operator.log,
    )["status"]

    assert first["phase"] == "Succeeded", first
    assert other["phase"] == "Succeeded", other
    result = result_file(node_agent.root, ns, "consortium")
    names = [s["name"] for s in sites]
    assert all(h["sites"] == sorted(names) for h in result["history"]), result["history"]
    assert first["round"] == other["round"] == 8
    assert {s["name"]: s["phase"] for s in first["sites"]}[remote_site["name"]] == "Remote"
    assert [s["name"] for s in other["sites"]] == [remote_site["name"]]
    assert other["sites"][0]["lastRound"] == 8
    # Nothing of the aggregator runs in the second cluster.
    listed = second_control_plane.kubectl("get", "pods,services", "-n", ns, "-o", "name").stdout
    assert "aggregator" not in listed
