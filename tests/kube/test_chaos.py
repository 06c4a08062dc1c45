"""The chaos soak, short (`bench/chaos.py` runs it at length): one fault of every kind the
harness makes, against a job where every site is needed each round. The job completes, no
round runs twice, the DP job's ledgers never go down, and the model is bit for bit the
undisturbed run's."""

from __future__ import annotations

import uuid

import pytest

from tests.kube_harness.chaos import KINDS, Soak, outputs, table, undisturbed
from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess

ROUNDS = 60


@pytest.mark.slow
def test_a_job_survives_one_fault_of_every_kind_and_ends_bit_equal(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess
) -> None:
    calm, wild = f"calm-{uuid.uuid4().hex[:6]}", f"wild-{uuid.uuid4().hex[:6]}"
    for ns in (calm, wild):
        control_plane.kubectl("create", "namespace", ns)
    reference = undisturbed(control_plane, node_agent, calm, "chaos", ROUNDS, timeout=600)
    soak = Soak(control_plane, node_agent, operator, wild, "chaos", "chaos-dp", seed=7)
    final = soak.run(ROUNDS, faults=len(KINDS), every=(1.0, 3.0), timeout=900)
    print("\n" + "\n".join(table(soak, final["job"].get("phase") == "Succeeded")))
    print(
        f"a round: {soak.round_seconds():.2f} s median; faults: {[f.detail for f in soak.faults]}"
    )
    assert final["job"]["phase"] == "Succeeded", final["job"]
    assert final["private"]["phase"] == "Succeeded", [
        c.get("message") for c in final["private"].get("conditions", [])
    ]
    assert sorted({f.kind for f in soak.faults}) == sorted(KINDS)
    result, model = outputs(node_agent, wild, "chaos")
    assert [h["round"] for h in result["history"]] == list(range(1, ROUNDS + 1))
    assert soak.ledger_reads > 0 and soak.ledger_drops == []
    assert model == reference, "the model differs from the undisturbed run's"
