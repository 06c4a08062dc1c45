"""A site's held-out records under an aggregator that asks again and again: a DP site scores a
given model once, counts the held-out noise in its own ledger, and remembers both across a
restart (issue 24)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fedkube.data.site_data import load_site_data
from fedkube.models.registry import initial_params
from fedkube.privacy.dataset_budget import DatasetBudget, read_ledgers
from fedkube.privacy.ledger import PrivacyLedger
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.job import FederatedJob
from fedkube.spec.load import parse_job
from fedkube.testing import manifest
from fedkube.trainer.guards import GUARDS_FILE
from fedkube.trainer.site import LEDGER_FILE, site_client, site_trainer

from tests.support.hostile_aggregator import HostileAggregator
from tests.support.ledger_race import RECORDS
from tests.support.privacy import library_epsilon

JOB, SITE, ASKS = "asked-again", "site-0", 400


def _job() -> FederatedJob:
    doc = manifest(JOB, sites=3, rounds=3)
    doc["spec"]["privacy"] = {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}
    doc["spec"]["evaluation"] = {"noiseMultiplier": 2.0}
    return parse_job(doc)


def _site(state: Path) -> tuple[HostileAggregator, threading.Thread]:
    """One real site (its trainer, ledger and client as a trainer pod makes them) against
    the hostile aggregator, with its state folder."""
    job = _job()
    data = load_site_data(job.spec, SITE)
    model = initial_params(job.spec.task, data.num_features, data.num_classes)
    aggregator = HostileAggregator(JOB, model)
    # Its dataset's ledger (across jobs) as a trainer pod keeps it on the state claim.
    budget = DatasetBudget(state / "datasets", RECORDS, f"ward/{JOB}", 5.0)
    trainer = site_trainer(job, SITE, data, state_dir=state, dataset=budget)
    client = site_client(job, SITE, aggregator, trainer, state)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    return aggregator, thread


def _ask(aggregator: HostileAggregator, round: int) -> None:
    """Score the model, as the final evaluation asks (the same parameters every time, under
    a new round number and version each time)."""
    task = pb.Task(
        ref=pb.RoundRef(job=JOB, round=round, attempt=1, site=SITE),
        stage=pb.EVALUATE,
        model_version=round,
        evaluate=True,
    )
    aggregator.push(task)


def _answers(evaluations: list[pb.Evaluation]) -> list[pb.Evaluation]:
    return [e for e in evaluations if e.counts]


def test_asked_400_times_to_score_one_model_a_dp_site_answers_once(tmp_path: Path) -> None:
    aggregator, thread = _site(tmp_path)
    for round in range(1, ASKS + 1):
        _ask(aggregator, round)
    evaluations = aggregator.wait_for("evaluation", ASKS, timeout=240)
    answered = _answers(evaluations)
    assert len(answered) == 1, f"{len(answered)} noised answers of one model"
    assert all(e.withheld for e in evaluations if not e.counts)
    assert sum(e.withheld for e in evaluations) == ASKS - 1
    # The site counted the one release itself, in its own ledger.
    ledger = PrivacyLedger(1e-5, None, tmp_path / LEDGER_FILE)
    once = library_epsilon(1.0, 2.0, 1, 1e-5)
    assert ledger.held_out_epsilon == pytest.approx(once, rel=1e-9)
    # And in its dataset's ledger, which the site's status (FederatedSite) reads.
    assert _held_out(tmp_path) == pytest.approx(once, rel=1e-9)
    aggregator.finish()
    thread.join(30)

    # A restarted trainer (a new pod on the same state) remembers the model it scored.
    again, thread = _site(tmp_path)
    _ask(again, ASKS + 1)
    (evaluation,) = again.wait_for("evaluation", 1)
    assert evaluation.withheld and not evaluation.counts
    assert PrivacyLedger(1e-5, None, tmp_path / LEDGER_FILE).held_out_epsilon == pytest.approx(
        once, rel=1e-9
    )
    assert (tmp_path / GUARDS_FILE).exists()
    assert _held_out(tmp_path) == pytest.approx(once, rel=1e-9)
    again.finish()
    thread.join(30)


def _held_out(state: Path) -> float:
    [ledger] = read_ledgers(state / "datasets")
    return float(ledger["jobs"][f"ward/{JOB}"]["heldOut"])
