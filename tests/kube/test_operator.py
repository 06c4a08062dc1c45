"""The operator end to end: a real API server, the node agent running pods as processes, the
operator logged in as the chart's ServiceAccount."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube.controlplane import ControlPlane
from tests.kube.jobs import apply, example, get_job, pods, result_file, wait_job, with_free_ports
from tests.kube.node_agent import NodeAgent
from tests.kube.operator_env import OperatorProcess


def test_breast_cancer_example_succeeds(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    doc = example()  # the example as it is: default ports, no volume
    apply(control_plane, namespace, doc)
    job = wait_job(control_plane, namespace, "breast-cancer", lambda s: s.get("phase") in ("Succeeded", "Failed"), log=operator.log)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["round"] == status["totalRounds"] == 20
    result = result_file(node_agent.root, namespace, "breast-cancer")
    assert result["roundsCompleted"] == 20
    assert status["accuracy"] == pytest.approx(result["global"]["accuracy"], abs=1e-6)
    assert status["loss"] == pytest.approx(result["global"]["loss"], abs=1e-6)
    assert {s["name"] for s in status["sites"]} == {f"hospital-{c}" for c in "abcde"}
    assert all(s["lastRound"] == 20 and s["samples"] > 0 for s in status["sites"])
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "True" and conditions["Failed"]["status"] == "False"
    assert status["observedGeneration"] == job["metadata"]["generation"]
    assert status["startTime"] and status["completionTime"]

    table = control_plane.kubectl("get", "fj", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "PHASE", "ROUND", "ACCURACY", "AGE"]
    assert row.split()[:4] == ["breast-cancer", "Succeeded", "20", f"{status['accuracy']:g}"[:len(row.split()[3])]]
    wide = control_plane.kubectl("get", "fj", "-n", namespace, "-o", "wide").stdout
    assert "STRATEGY" in wide and "fedavg" in wide

    events = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "breast-cancer"}
    assert {"Started", "Completed"} <= reasons, reasons
