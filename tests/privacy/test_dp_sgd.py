"""Record-level DP-SGD at the sites: the ledger, the cap, and that it still learns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fedkube.errors import PrivacyBudgetExhausted
from fedkube.privacy.accountant import RdpAccountant, noise_for_epsilon
from fedkube.privacy.ledger import PrivacyLedger
from fedkube.simulation import simulate
from fedkube.spec import parse_job
from fedkube.testing import LocalJob, manifest

from tests.support.privacy import library_epsilon


def test_ledger_spends_as_the_library_counts_and_remembers_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(1e-5, cap=None, path=path)
    for _ in range(5):
        ledger.spend(1.1, 0.1, 9)
    expected = library_epsilon(0.1, 1.1, 45, 1e-5)
    assert ledger.epsilon == pytest.approx(expected, rel=0.01)
    again = PrivacyLedger(1e-5, cap=None, path=path)  # a restarted trainer
    assert again.epsilon == pytest.approx(expected, rel=1e-9)


def test_the_cap_is_checked_before_a_round_is_spent() -> None:
    ledger = PrivacyLedger(1e-5, cap=5.0)  # rounds of 3.44, 4.22, 4.85, then 5.39
    spent = 0
    with pytest.raises(PrivacyBudgetExhausted, match="above its cap 5"):
        for _ in range(1000):
            ledger.check(1.0, 0.1, 10)
            ledger.spend(1.0, 0.1, 10)
            spent += 1
    assert spent == 3 and ledger.epsilon <= 5.0


def test_noise_for_epsilon_hits_the_target() -> None:
    z = noise_for_epsilon(4.0, 0.1, 300, 1e-5)
    trial = RdpAccountant()
    trial.step(z, 0.1, 300)
    assert trial.epsilon(1e-5) == pytest.approx(4.0, rel=0.01)


def test_dp_sgd_sites_still_learn_and_report_their_epsilon() -> None:
    doc = manifest("dp", sites=3, rounds=6, dataset="digits", model={"name": "mlp"})
    doc["spec"]["task"].update(learningRate=0.2)
    doc["spec"]["privacy"] = {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}
    # Without it a DP job sends no site's scores (test_private_evaluation.py).
    doc["spec"]["evaluation"] = {"noiseMultiplier": 2.0}
    result = simulate(parse_job(doc))
    assert result.history[-1].accuracy > 0.6
    assert all(m["epsilon"] > 0 for m in result.sites.values())


def test_a_site_stops_at_its_own_cap_and_the_job_goes_on(tmp_path: Path) -> None:
    doc = manifest(
        "capped", sites=3, rounds=8, min_sites=2, dataset="digits", model={"name": "mlp"}
    )
    doc["spec"]["privacy"] = {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}
    job = LocalJob(tmp_path, doc)
    state = tmp_path / "site-0-state"
    job.trainer_args["site-0"] = ["--epsilon-cap", "3.0", "--state-dir", str(state)]
    try:
        job.start_all()
        result = job.wait_done()
        code = job.trainers["site-0"].wait(30)
    finally:
        job.stop()
    assert code == 0
    assert "above its cap 3" in job.log("site-0")
    rounds_in = [h.round for h in result.history if "site-0" in h.sites]
    assert rounds_in and rounds_in == list(range(1, len(rounds_in) + 1)) and len(rounds_in) < 8
    assert [h.round for h in result.history] == list(range(1, 9))
    ledger = json.loads((state / "privacy-ledger.json").read_text())
    assert RdpAccountant.from_state(ledger).epsilon(1e-5) <= 3.0


def _update_twice(doc: dict) -> tuple[dict, dict]:
    from fedkube.data import load_site_data
    from fedkube.models.registry import initial_params
    from fedkube.spec import parse_job
    from fedkube.trainer.local import LocalTrainer

    spec = parse_job(doc).spec
    data = load_site_data(spec, "site-0")
    params = initial_params(spec.task, data.num_features, data.num_classes)
    updates = []
    for _ in range(2):  # two sites' processes, or one restarted: the same manifest each time
        trainer = LocalTrainer(spec.task, data, "site-0", None, spec.privacy)
        updates.append(trainer.train(params, 1, {})[0])
    return updates[0], updates[1]


def test_dp_sgd_noise_and_batches_cannot_be_replayed_from_the_manifest() -> None:
    """The manifest (seed included) is public, the aggregator's too: two trainings from it on
    the same data must not draw the same noise or the same batches, or the noise could be
    subtracted. Without DP, training stays reproducible."""
    doc = manifest("replay", sites=2, rounds=1)
    plain_a, plain_b = _update_twice(doc)
    assert all(np.array_equal(plain_a[k], plain_b[k]) for k in plain_a)
    doc["spec"]["privacy"] = {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}
    dp_a, dp_b = _update_twice(doc)
    assert not any(np.array_equal(dp_a[k], dp_b[k]) for k in dp_a)
