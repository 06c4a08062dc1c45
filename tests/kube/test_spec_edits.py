"""Editing a running FederatedJob against the real API server and the operator, one test per
class of field (fedkube.spec.edits): what the sites admitted is refused with a message that
says what to do; more rounds roll out (the pods are recreated, the aggregator resumes from
its checkpoint, observedGeneration says when); an operational field applies at once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import apply, example, get_job, pods, wait_job, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess


def patch(cp: ControlPlane, ns: str, job: str, spec: dict[str, Any], check: bool = True) -> Any:
    return cp.kubectl(
        "patch", "fj", job, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}),
        check=check,
    )  # fmt: skip


def uids(cp: ControlPlane, ns: str, job: str) -> dict[str, str]:
    return {n: p["metadata"]["uid"] for n, p in pods(cp, ns, job).items()}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"privacy": {"updateLevel": {"noiseMultiplier": 0.1, "clipNorm": 1.0}}}, "privacy"),
        ({"evaluation": {"everyRounds": 5}}, "evaluation"),
        ({"task": {"learningRate": 0.5}}, "task"),
        ({"aggregator": {"port": 7071}}, "aggregator"),
    ],
)
def test_what_the_sites_admitted_is_refused_with_what_to_do(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, edit: dict, field: str
) -> None:
    doc = with_free_ports(example("admitted", rounds=2, suspend=True))
    apply(control_plane, namespace, doc)
    out = patch(control_plane, namespace, "admitted", edit, check=False)
    assert out.returncode != 0
    assert f"spec.{field} is immutable once the job exists" in out.stderr, out.stderr
    assert "create a new job under another name" in out.stderr
    # A site dropped from the list: the same, for the sites.
    sites = doc["spec"]["sites"][:-1]
    dropped = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=yaml.safe_dump({**doc, "spec": {**doc["spec"], "sites": sites}}), check=False,
    )  # fmt: skip
    assert dropped.returncode != 0 and "spec.sites is immutable" in dropped.stderr


def test_more_rounds_roll_out_to_the_pods_and_the_job_runs_them(
    control_plane: ControlPlane, operator: OperatorProcess, node_agent: NodeAgent, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, with_free_ports(example("grow", rounds=1000)))
    job = wait_job(cp, namespace, "grow", lambda s: s.get("round", 0) >= 3, log=operator.log)
    before = uids(cp, namespace, "grow")
    assert len(before) == 6
    target = job["status"]["round"] + 150
    patch(cp, namespace, "grow", {"rounds": target})
    generation = get_job(cp, namespace, "grow")["metadata"]["generation"]

    def rolled(status: dict[str, Any]) -> bool:
        return status.get("observedGeneration") == generation

    wait_job(cp, namespace, "grow", rolled, timeout=120, log=operator.log)
    after = uids(cp, namespace, "grow")
    assert set(after) == set(before) and not set(after.values()) & set(before.values())
    done = wait_job(
        cp, namespace, "grow", lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout=300,
        log=operator.log,
    )  # fmt: skip
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["round"] == status["totalRounds"] == target
    assert status["aggregatorRestarts"] == 0  # a roll-out is not a failure
    events = cp.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=RollingOut", "-o", "json"
    )
    assert json.loads(events.stdout)["items"], "a RollingOut event says what was recreated"


def test_an_operational_edit_applies_at_once_and_restarts_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, node_agent: NodeAgent, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, with_free_ports(example("steady", rounds=1000)))
    wait_job(cp, namespace, "steady", lambda s: s.get("round", 0) >= 2, log=operator.log)
    before = uids(cp, namespace, "steady")
    patch(cp, namespace, "steady", {"backoffLimit": 7})
    generation = get_job(cp, namespace, "steady")["metadata"]["generation"]
    wait_job(
        cp, namespace, "steady", lambda s: s.get("observedGeneration") == generation,
        timeout=60, log=operator.log,
    )  # fmt: skip
    time.sleep(3)  # a few more reconciles
    assert uids(cp, namespace, "steady") == before
    cp.kubectl("delete", "fj", "steady", "-n", namespace, "--wait=false")
