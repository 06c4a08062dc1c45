"""The operator's check of a job against each dataset's budget, before any pod (pure): from
the ledgers the site's trainers keep, with the accountant the trainers use."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fedkube.privacy.planning import planned_epsilon
from fedkube.spec import parse_job
from fedkube_operator.dataset_budget_check import budget_problems
from fedkube_operator.operator_args import build_parser
from fedkube_operator.plan import plan

from tests.operator.test_plan import observed
from tests.operator.test_site_policy import SITE, data_job

CAPPED = replace(SITE, epsilon_cap=5.0, state_claim="ward-state")
VOLUME = "claim/ward-data"


def ledger(file: str, jobs: dict[str, Any], rows: int = 500, read_at: str = "2026-12-01") -> dict:
    dataset = {"volume": VOLUME, "file": file, "sha256": "ab" * 32, "rows": rows}
    return {"dataset": {**dataset, "readAt": read_at}, "jobs": jobs}


FIRST_HOLDS_3 = {"hospitals/first": {"reserved": 3.0, "spent": 1.2}}


def test_a_job_that_would_pass_a_datasets_cap_is_refused_before_any_pod() -> None:
    r = data_job()  # epsilonCap 3: the accountant plans more, so it plans 3
    job = parse_job(r)
    assert planned_epsilon(job.spec, "hospital-a", 500) == 3.0
    seen = observed()
    seen.ledgers = [ledger("a.csv", FIRST_HOLDS_3)]
    p = plan(r, seen, CAPPED)
    assert p.create == [] and p.status.phase == "Failed"
    condition = next(c for c in p.status.conditions if c.type == "SpecValid")
    assert condition.reason == "RefusedBySite"
    message = condition.message
    assert message.startswith("spec.privacy.recordLevel.epsilonCap: site 'hospital-a' would ")
    assert "epsilon 3 on dataset 'a.csv' on claim/ward-data (sha256 abababababab..., 500 rows)" in (
        message
    )
    assert "other jobs hold 3 of this site's cap 5 (Helm value site.epsilonCap)" in message
    assert "hospitals/first 3; 2 is left" in message


def test_what_fits_or_is_not_known_is_left_to_the_trainer() -> None:
    job = parse_job(data_job())
    # Room for it: the first job finished, holding what it spent.
    done = {"hospitals/first": {"reserved": 3.0, "spent": 1.2, "finished": True}}
    assert budget_problems(job, "hospitals", CAPPED, [ledger("a.csv", done)]) == []
    # Its own entry (a restart) is not another job's.
    mine = {"hospitals/breast-cancer": {"reserved": 3.0, "spent": 2.0}}
    assert budget_problems(job, "hospitals", CAPPED, [ledger("a.csv", mine)]) == []
    # A file no ledger has read (or a ledger without its rows): the trainer judges it.
    assert budget_problems(job, "hospitals", CAPPED, [ledger("other.csv", FIRST_HOLDS_3)]) == []
    no_rows = ledger("a.csv", FIRST_HOLDS_3)
    del no_rows["dataset"]["rows"]
    assert budget_problems(job, "hospitals", CAPPED, [no_rows]) == []
    # No cap, or ledgers the operator cannot read: nothing to judge here.
    held = [ledger("a.csv", FIRST_HOLDS_3)]
    assert budget_problems(job, "hospitals", replace(CAPPED, epsilon_cap=None), held) == []
    assert budget_problems(job, "hospitals", CAPPED, None) == []


def test_a_changed_file_is_judged_by_its_newest_ledger() -> None:
    job = parse_job(data_job())
    old = ledger("a.csv", FIRST_HOLDS_3, read_at="2026-11-01T00:00:00Z")
    new = ledger("a.csv", {}, read_at="2026-12-01T00:00:00Z")
    new["dataset"]["sha256"] = "cd" * 32
    assert budget_problems(job, "hospitals", CAPPED, [old, new]) == []
    # The old file's ledger alone (the file as it was) still binds.
    assert len(budget_problems(job, "hospitals", CAPPED, [old])) == 1


def test_a_started_job_is_not_judged_again_by_the_operator() -> None:
    r = data_job()
    r["status"] = {"startTime": "2026-12-01T00:00:00Z", "phase": "Running"}
    seen = observed()
    seen.ledgers = [ledger("a.csv", FIRST_HOLDS_3)]
    p = plan(r, seen, CAPPED)
    assert p.status.phase != "Failed", p.status.message


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_the_operator_refuses_a_cap_that_is_not_above_zero(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--epsilon-cap", value])
    assert f"a privacy budget is a number above 0: {value}" in capsys.readouterr().err
    assert build_parser().parse_args(["--epsilon-cap", "0.5"]).epsilon_cap == 0.5


def test_the_operator_refuses_a_cap_from_its_environment_as_it_does_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDKUBE_EPSILON_CAP", "4.5")
    assert build_parser().parse_args([]).epsilon_cap == 4.5
    monkeypatch.setenv("FEDKUBE_EPSILON_CAP", "0")
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert "--epsilon-cap: a privacy budget is a number above 0: 0" in capsys.readouterr().err
