"""Two hospitals, two clusters, one job: docs/deploy.md's walkthrough, step for step.

Hospital A's cluster runs the aggregator and hospital A's trainer; hospital B's cluster
(Helm value site.name=hospital-b) runs hospital B's trainer only, dialling A's aggregator with
mutual TLS. The manifests are the repository's examples/two-hospitals/ files as they are,
but for addresses: here every pod shares the machine's loopback (no cloud load balancer, no
kube-proxy), so the aggregator's ports are free ones and hospital B dials 127.0.0.1. The
helm install and helm test steps are tests/kube/test_images.py's; here each cluster's operator
is a process with the flags those values give (tests/kube_harness/operator_env.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from fedkube.cli.launch import free_port

from tests.kube_harness.controlplane import ROOT, ControlPlane
from tests.kube_harness.jobs import result_file, wait_job
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess
from tests.support.cli import fedkube_cli

EXAMPLES = ROOT / "examples" / "two-hospitals"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
NS, JOB = "fedkube-jobs", "two-hospitals"


def test_two_hospitals_in_two_clusters_train_every_round_together(
    tmp_path: Path,
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    second_control_plane: ControlPlane,
    second_node_agent: NodeAgent,
    second_operator: OperatorProcess,
) -> None:
    doc = DEPLOY_DOC.read_text()
    a_file, b_file = EXAMPLES / "hospital-a.yaml", EXAMPLES / "hospital-b.yaml"

    # 1. Each hospital checks its manifest.
    for f in (a_file, b_file):
        checked = fedkube_cli(["validate", str(f)])
        assert checked.returncode == 0, checked.stderr
        assert f"fedkube validate examples/two-hospitals/{f.name}" in doc

    # 2. The consortium's certificates: one CA; each party makes its key and a request, which
    # the CA signs (the key never leaves its party).
    hostname = "fedkube.hospital-a.example.org"
    # Here the aggregator is also reached on loopback; the doc names the host alone.
    hosts = f"{hostname},127.0.0.1"
    steps = [
        (["ca", "--out", "ca", "--consortium", JOB], "fedkube certs ca --out ca --consortium "
         f"{JOB}"),
        (["request", "--name", hostname, "--aggregator-host", hosts, "--out", "aggregator"],
         f"fedkube certs request --name {hostname} --aggregator-host {hostname} --out aggregator"),
        (["request", "--name", "hospital-a", "--out", "hospital-a"],
         "fedkube certs request --name hospital-a --out hospital-a"),
        (["request", "--name", "hospital-b", "--out", "hospital-b"],
         "fedkube certs request --name hospital-b --out hospital-b"),
        (["sign", "aggregator/request.csr", "--ca-dir", "ca", "--name", hostname, "--role",
          "aggregator", "--aggregator-host", hosts, "--out", "aggregator"],
         f"fedkube certs sign aggregator/request.csr --ca-dir ca --name {hostname} --role "
         f"aggregator --aggregator-host {hostname} --out aggregator"),
        (["sign", "hospital-a/request.csr", "--ca-dir", "ca", "--name", "hospital-a", "--out",
          "hospital-a"],
         "fedkube certs sign hospital-a/request.csr --ca-dir ca --name hospital-a --out "
         "hospital-a"),
        (["sign", "hospital-b/request.csr", "--ca-dir", "ca", "--name", "hospital-b", "--out",
          "hospital-b"],
         "fedkube certs sign hospital-b/request.csr --ca-dir ca --name hospital-b --out "
         "hospital-b"),
    ]  # fmt: skip
    for args, written in steps:
        made = fedkube_cli(["certs", *args], cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        assert written in doc, written

    # 3. Each cluster: the job's namespace and its own Secrets, nothing of the other's.
    secrets = [
        (control_plane, [(f"{JOB}-aggregator-tls", "aggregator"), (f"{JOB}-hospital-a-tls",
                         "hospital-a")]),
        (second_control_plane, [(f"{JOB}-hospital-b-tls", "hospital-b")]),
    ]  # fmt: skip
    for cluster, pairs in secrets:
        cluster.kubectl("create", "namespace", NS)
        for secret, folder in pairs:
            cluster.kubectl("create", "secret", "generic", secret, "-n", NS,
                            f"--from-file={tmp_path / folder}")  # fmt: skip
            assert f"kubectl create secret generic {secret} -n {NS} --from-file={folder}" in doc

    # 4. Each hospital applies its manifest (here with loopback addresses).
    first = yaml.safe_load(a_file.read_text())
    second = yaml.safe_load(b_file.read_text())
    port, http_port = free_port(), free_port()
    first["spec"]["aggregator"].update(port=port, httpPort=http_port)
    second["spec"]["aggregator"].update(endpoint=f"127.0.0.1:{port}", port=port)
    for cluster, manifest, f in (
        (control_plane, first, a_file),
        (second_control_plane, second, b_file),
    ):
        cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(manifest))
        assert f"kubectl apply -n {NS} -f examples/two-hospitals/{f.name}" in doc

    # 5. Both follow the same rounds to the end.
    def ended(status: dict) -> bool:
        return status.get("phase") in ("Succeeded", "Failed")

    a = wait_job(control_plane, NS, JOB, ended, log=operator.log)["status"]
    b = wait_job(second_control_plane, NS, JOB, ended, log=second_operator.log)["status"]
    assert a["phase"] == "Succeeded", a
    assert b["phase"] == "Succeeded", b
    # Hospital B's status follows the rounds through its own trainer, which asks the
    # aggregator over its mutual-TLS channel: B's manifest names no HTTP port of A's.
    assert "httpPort" not in yaml.safe_load(b_file.read_text())["spec"]["aggregator"]
    assert a["round"] == b["round"] == 8
    # 7. What `kubectl get fj -o wide` shows, in hospital A's cluster.
    wide = control_plane.kubectl("get", "fj", "-n", NS, "-o", "wide").stdout.splitlines()
    shown = doc.split(f"kubectl get fj -n {NS} -o wide\n", 1)[1].splitlines()
    assert wide[0].split() == shown[0].split()
    row = dict(zip(wide[0].split(), wide[1].split(), strict=True))
    assert (row["NAME"], row["PHASE"], row["ROUND"], row["MODEL"], row["SITES"]) == (
        JOB,
        "Succeeded",
        "8",
        f"{JOB}-output",
        "2",
    )
    result = result_file(node_agent.root, NS, JOB)
    assert all(h["sites"] == ["hospital-a", "hospital-b"] for h in result["history"])
    assert {s["name"]: s["phase"] for s in a["sites"]}["hospital-b"] == "Remote"
    assert [s["name"] for s in b["sites"]] == ["hospital-b"] and b["sites"][0]["lastRound"] == 8
    # Nothing of the aggregator runs in hospital B's cluster; A's is behind a load balancer
    # that lets in hospital B's addresses alone.
    listed = second_control_plane.kubectl("get", "pods,services", "-n", NS, "-o", "name").stdout
    assert "aggregator" not in listed
    service = json.loads(
        control_plane.kubectl("get", "service", f"{JOB}-aggregator", "-n", NS, "-o", "json").stdout
    )
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    # 6. Hospital B's cluster refuses to train for another site (its site.name).
    wrong = dict(yaml.safe_load(b_file.read_text()), metadata={"name": "not-mine"})
    wrong["spec"]["sites"][0]["name"] = "hospital-c"
    second_control_plane.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(wrong))
    refused = wait_job(second_control_plane, NS, "not-mine", ended, log=second_operator.log)
    condition = next(c for c in refused["status"]["conditions"] if c["type"] == "SpecValid")
    assert condition["reason"] == "RefusedBySite"
    assert condition["message"].startswith(
        "spec.sites[0].remote: this cluster is site 'hospital-b'"
    )
