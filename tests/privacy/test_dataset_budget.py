"""One privacy budget per dataset, across jobs (issue 24): what a job reserves before it
trains, what it spends, what every other job of the same records holds, and the ledger's
lock between two processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import yaml
from fedkube import exit_codes
from fedkube.errors import PrivacyBudgetExhausted, SiteRefused
from fedkube.privacy.accountant import RdpAccountant
from fedkube.privacy.dataset_budget import DatasetBudget, dataset_of, read_ledgers
from fedkube.privacy.ledger import PrivacyLedger
from fedkube.spec.load import parse_job
from fedkube.testing import manifest
from fedkube.trainer.dataset_admission import planned_epsilon
from fedkube.trainer.dp_sgd import dp_steps

from tests.support.cli import fedkube_cli
from tests.support.ledger_race import RECORDS, reserve
from tests.support.site_files import file_job, write_site_files


def _budget(folder: Path, job: str, cap: float | None = 5.0) -> DatasetBudget:
    return DatasetBudget(folder, RECORDS, job, cap)


def test_a_second_job_planning_past_the_cap_is_refused_and_leaves_no_trace(
    tmp_path: Path,
) -> None:
    _budget(tmp_path, "ward/first").reserve(3.0)
    before = (tmp_path / f"{RECORDS.key}.json").read_bytes()
    with pytest.raises(SiteRefused) as refused:
        _budget(tmp_path, "lab/second").reserve(3.0)
    message = str(refused.value)
    for said in (
        "plans epsilon 3",
        "'clinic-a.csv' on claim/hospital-data",
        "other jobs hold 3 of this site's cap 5 (Helm value site.epsilonCap): ward/first 3",
        "2 is left",
        "spec.privacy.recordLevel.epsilonCap",
    ):
        assert said in message, message
    assert (tmp_path / f"{RECORDS.key}.json").read_bytes() == before
    # What fits in what is left is admitted.
    _budget(tmp_path, "lab/third").reserve(2.0)


def test_a_finished_job_holds_what_it_spent_and_a_running_one_its_reservation(
    tmp_path: Path,
) -> None:
    first = _budget(tmp_path, "ward/first")
    first.reserve(3.0)
    first.record(1.25, 1e-5)
    assert _budget(tmp_path, "lab/x").held_by_others() == 3.0
    first.finish()
    assert _budget(tmp_path, "lab/x").held_by_others() == 1.25
    _budget(tmp_path, "lab/second").reserve(3.75)
    [ledger] = read_ledgers(tmp_path)
    assert ledger["dataset"] == {
        "volume": RECORDS.volume,
        "file": RECORDS.file,
        "sha256": "ab" * 32,
    }
    assert ledger["held"] == 5.0


def test_a_jobs_spend_never_goes_down(tmp_path: Path) -> None:
    """A restarted trainer whose own ledger is behind (or gone) writes nothing lower."""
    job = _budget(tmp_path, "ward/first")
    job.reserve(1.0)
    job.record(2.5, 1e-5)
    job.record(0.4, 1e-5)
    job.reserve(1.0)  # the pod came back
    entry = json.loads((tmp_path / f"{RECORDS.key}.json").read_text())["jobs"]["ward/first"]
    assert entry["spent"] == 2.5 and entry["reserved"] == 1.0
    assert _budget(tmp_path, "lab/x").held_by_others() == 2.5


def test_an_unreadable_ledger_refuses_every_job_and_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / f"{RECORDS.key}.json"
    path.write_text('{"jobs": {"ward/first": {"spent": 4.9')
    with pytest.raises(SiteRefused) as refused:
        _budget(tmp_path, "lab/second").reserve(0.1)
    assert str(path) in str(refused.value) and "restore it from a backup" in str(refused.value)
    assert path.read_text() == '{"jobs": {"ward/first": {"spent": 4.9'


def test_a_dataset_is_its_volume_its_file_and_its_contents(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("x,y\n1,0\n")
    same = dataset_of("claim/data", "a.csv", csv)
    assert same == dataset_of("claim/data", "a.csv", csv)
    assert same.key != dataset_of("claim/other", "a.csv", csv).key
    csv.write_text("x,y\n1,1\n")
    assert same.key != dataset_of("claim/data", "a.csv", csv).key


def test_two_trainers_reserving_at_once_never_both_fit(tmp_path: Path) -> None:
    """Real processes, released together, ten times: the lock lets exactly one in."""
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(10):
        folder = tmp_path / str(attempt)
        start = ctx.Event()
        procs = [
            ctx.Process(target=reserve, args=(str(folder), f"ns/job-{i}", 3.0, 5.0, start))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(60)
        assert sorted(p.exitcode for p in procs) == [0, 3], attempt
        [ledger] = read_ledgers(folder)
        assert len(ledger["jobs"]) == 1 and ledger["held"] == 3.0


def test_training_stops_where_the_datasets_other_jobs_leave_off(tmp_path: Path) -> None:
    _budget(tmp_path, "ward/first").reserve(3.0)
    mine = _budget(tmp_path, "lab/second")
    mine.reserve(0.5)
    ledger = PrivacyLedger(1e-5, None, tmp_path / "job-ledger.json", mine)
    q, steps = 0.05, 20
    spent: list[float] = []
    with pytest.raises(PrivacyBudgetExhausted) as stopped:
        for _ in range(100):
            ledger.check(1.5, q, steps)
            ledger.spend(1.5, q, steps)
            spent.append(ledger.epsilon)
    # 3 held by the other job, of 5: this one stops within the 2 left (five rounds of
    # these, the sixth would take it to 2.04).
    assert len(spent) == 5 and spent[-1] <= 2.0
    assert "(3.000 held by others)" in str(stopped.value)
    assert "site.epsilonCap" in str(stopped.value)
    entry = json.loads((tmp_path / f"{RECORDS.key}.json").read_text())["jobs"]["lab/second"]
    assert entry["spent"] == pytest.approx(spent[-1])


def test_the_planned_epsilon_is_the_accountants_over_every_round_at_most_the_jobs_cap() -> None:
    doc = manifest("planned", sites=2, rounds=7)
    doc["spec"]["privacy"] = {"recordLevel": {"noiseMultiplier": 1.1, "maxGradNorm": 1.0}}
    job = parse_job(doc)
    rows = 400
    site = job.spec.sites[0]
    assert site.data is not None
    train = rows - round(rows * site.data.held_out_fraction)
    q, steps = dp_steps(train, job.spec.task.batch_size, job.spec.task.local_epochs)
    expected = RdpAccountant([(q, 1.1, steps * 7)]).epsilon(1e-5)
    assert planned_epsilon(job.spec, site.name, rows) == pytest.approx(expected)
    doc["spec"]["privacy"]["recordLevel"]["epsilonCap"] = expected / 2
    assert planned_epsilon(parse_job(doc).spec, site.name, rows) == expected / 2
    doc["spec"].pop("privacy")
    assert planned_epsilon(parse_job(doc).spec, site.name, rows) == 0.0


def test_a_trainer_refuses_a_job_its_dataset_cannot_afford_before_it_dials_anyone(
    tmp_path: Path,
) -> None:
    """A trainer pod as the operator makes it: the dataset's ledger on the state claim
    already holds 4 of the site's 5 for a running job in another namespace; a job planning
    3 is refused (exit 3) before it trains or dials its aggregator (nothing listens on port
    9: a trainer that tried would wait there), its trail says so, and the ledger is as it
    was."""
    data = tmp_path / "data"
    files = write_site_files(data)
    doc = file_job({s: Path(p.name) for s, p in files.items()}, name="second", rounds=20)
    doc["spec"]["privacy"] = {
        "recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0, "epsilonCap": 3.0}
    }
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    doc["spec"]["task"]["labels"] = ["benign", "malignant"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    datasets, state = tmp_path / "datasets", tmp_path / "state"
    records = dataset_of("claim/site-data", "clinic-a.csv", files["clinic-a"])
    DatasetBudget(datasets, records, "lab/first", 5.0).reserve(4.0)
    before = (datasets / f"{records.key}.json").read_bytes()
    out = fedkube_cli(
        ["trainer", "--manifest", str(path), "--site", "clinic-a", "--aggregator", "127.0.0.1:9",
         "--allow-plaintext", "--data-dir", str(data), "--state-dir", str(state),
         "--audit-log", str(state / "audit.jsonl"), "--epsilon-cap", "5",
         "--datasets-dir", str(datasets), "--dataset-volume", "claim/site-data",
         "--job-id", "ward/second"],
        timeout=120,
    )  # fmt: skip
    assert out.returncode == exit_codes.REFUSED_BY_SITE, out.stderr
    for said in ("the job plans epsilon 3", "lab/first 4", "(Helm value site.epsilonCap)"):
        assert said in out.stderr, out.stderr
    assert (datasets / f"{records.key}.json").read_bytes() == before
    trail = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in trail] == ["trainer started", "trainer refused"]
    assert "site.epsilonCap" in trail[1]["outcome"]
    assert not (state / "privacy-ledger.json").exists()


def test_held_out_noise_counts_in_the_dataset_and_the_site_reads_it_all(tmp_path: Path) -> None:
    """Noised held-out scores are spent on the same records: the dataset's ledger counts them
    beside DP-SGD, and `fedkube budget` shows the site each job's share and what is left."""
    first = _budget(tmp_path, "ward/first")
    first.reserve(2.0)
    ledger = PrivacyLedger(1e-5, None, tmp_path / "first.json", first)
    ledger.spend(1.5, 0.05, 20)
    ledger.spend_held_out(2.0)
    entry = json.loads((tmp_path / f"{RECORDS.key}.json").read_text())["jobs"]["ward/first"]
    assert entry["heldOut"] == pytest.approx(ledger.held_out_epsilon) and entry["heldOut"] > 0
    assert entry["spent"] == pytest.approx(ledger.epsilon + ledger.held_out_epsilon)
    first.finish()
    _budget(tmp_path, "lab/second").reserve(1.0)
    out = fedkube_cli(["budget", str(tmp_path), "--cap", "5"], timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "dataset clinic-a.csv on claim/hospital-data (sha256 abababababab...)"
    held = entry["spent"] + 1.0
    assert lines[1] == f"  held {held:.3f} of cap 5, {5 - held:.3f} left"
    first_row = next(line for line in lines if "ward/first" in line).split()
    assert first_row[1:] == [
        "2.000",
        f"{entry['spent']:.3f}",
        f"{entry['heldOut']:.3f}",
        "finished",
    ]
    second_row = next(line for line in lines if "lab/second" in line).split()
    assert second_row[1:] == ["1.000", "0.000", "0.000", "running"]
    missing = fedkube_cli(["budget", str(tmp_path / "nowhere")], timeout=60)
    assert missing.returncode == exit_codes.BAD_INPUT and "site.state.claimName" in missing.stderr
