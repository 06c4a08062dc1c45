"""An aggregator that stopped after every site revealed a secure round, but before it saved
the round, runs that round again when it comes back (the rollout that recreates a job's pods
mid-round does this). The sites send the release they kept, masked with the new try's keys,
and reveal again for the same survivors: the round closes with the sum it had, bit for bit.
Real aggregator and trainer processes, real gRPC on loopback; the kept file itself below."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fedkube.aggregator.checkpoint import FILE_NAME as CHECKPOINT_FILE
from fedkube.spec.progress import JobResult
from fedkube.storage.safetensors_file import read_safetensors
from fedkube.testing import LocalJob, manifest
from fedkube.trainer.contribution import (
    CONTRIBUTION_FILE,
    Contribution,
    ContributionStore,
    Label,
)
from fedkube.trainer.guards import GUARDS_FILE

from tests.support.site_files import file_job, write_site_files

SITES = ["site-0", "site-1", "site-2"]


def secure_job(rounds: int) -> dict:
    # Every site needed; a round's training (many local epochs: about a second) leaves time
    # to copy what the round before left behind before this one replaces it.
    doc = manifest("rerun", sites=3, rounds=rounds, min_sites=3, local_epochs=150, timeout=120)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    return doc


def local_job(folder: Path, doc: dict, states: Path, sites: list[str] | None = None) -> LocalJob:
    folder.mkdir()
    job = LocalJob(folder, doc)
    for site in sites or SITES:
        job.trainer_args[site] = ["--state-dir", str(states / site)]
    return job


def kept_round(state: Path) -> int:
    return int(read_safetensors(state / CONTRIBUTION_FILE)[1]["round"])


def model_of(checkpoint: Path) -> dict[str, np.ndarray]:
    arrays, _ = read_safetensors(checkpoint)
    return {k.removeprefix("model/"): v for k, v in arrays.items() if k.startswith("model/")}


def lose_round_2(tmp_path: Path, doc: dict, sites: list[str]) -> tuple[Path, Path]:
    """Run the job with ``sites``. What its aggregator had saved when round 2 opened, and
    what the sites hold once round 2 closed (copied while round 3 trains: they revealed round
    2 and keep its release), are what an aggregator that stopped between round 2's reveal and
    its save leaves behind: in the folder returned, with the checkpoint round 2 made."""
    first = local_job(tmp_path / "first", doc, tmp_path / "states", sites)
    lost, made = tmp_path / "lost", tmp_path / "round-2-made"
    try:
        first.start_aggregator()
        for site in sites:
            first.start_trainer(site)
        first.wait_for(lambda p: p.round >= 1)
        (lost / "ck").mkdir(parents=True)
        shutil.copy(first.tmp / "ck" / CHECKPOINT_FILE, lost / "ck" / CHECKPOINT_FILE)
        first.wait_for(lambda p: p.round >= 2)
        shutil.copytree(tmp_path / "states", lost / "states")
        shutil.copy(first.tmp / "ck" / CHECKPOINT_FILE, made)
        assert first.wait_done().phase == "Succeeded"
    finally:
        first.stop()
    for site in sites:
        assert kept_round(lost / "states" / site) == 2, "round 3 trained before the copy"
    return lost, made


def run_round_2_again(
    tmp_path: Path, doc: dict, lost: Path, sites: list[str]
) -> tuple[LocalJob, JobResult, Path]:
    """The successor: resumed from round 1, the sites' folders as round 2 left them; the
    job, its result, and the checkpoint it saved after round 2."""
    again = local_job(tmp_path / "again", doc, lost / "states", sites)
    shutil.copytree(lost / "ck", again.tmp / "ck")
    remade = tmp_path / "round-2-remade"
    try:
        again.start_all()
        again.wait_for(lambda p: p.round >= 2)
        shutil.copy(again.tmp / "ck" / CHECKPOINT_FILE, remade)
        return again, again.wait_done(timeout=240), remade
    finally:
        again.stop()


@pytest.mark.slow
def test_a_secure_round_lost_after_its_reveal_closes_again_with_the_same_model(
    tmp_path: Path,
) -> None:
    lost, made = lose_round_2(tmp_path, secure_job(rounds=3), SITES)
    for site in SITES:
        state = lost / "states" / site
        guards = json.loads((state / GUARDS_FILE).read_text())
        assert guards["revealed"] == [1, 2] and guards["lastReveal"]["survivors"] == SITES

    # Its successor resumes from round 1 and runs round 2 again; the sites, their state
    # folders as round 2 left them, send what they sent then, and reveal for the same sites.
    started = time.monotonic()
    again, result, remade = run_round_2_again(tmp_path, secure_job(rounds=3), lost, SITES)
    assert "resumed from checkpoint" in again.log("aggregator")
    assert result.phase == "Succeeded" and result.rounds_completed == 3, again.log("aggregator")
    assert [h.round for h in result.history] == [1, 2, 3]
    assert all(h.sites == SITES for h in result.history)
    assert time.monotonic() - started < 120, "no site was waited for until a deadline"
    for site in SITES:
        log = (again.logs / f"{site}.log").read_text()
        assert "round 2: run again; this site sends the release it kept" in log, log
        assert " ERROR " not in log and "task refused" not in log, log
    before, after = model_of(made), model_of(remade)
    assert sorted(before) == sorted(after)
    for name, values in after.items():
        assert np.array_equal(values, before[name]), f"{name}: another sum than round 2 had"


@pytest.mark.slow
def test_a_round_run_again_is_kept_to_the_survivors_it_was_revealed_for(
    tmp_path: Path,
) -> None:
    """Four sites listed, three of them training: round 2 was revealed for site-0..2. When
    it is run again, site-3 has come and sends a masked update too; the sites that revealed
    say for whom they did, and the aggregator takes site-3 out of that try (its update out of
    the sum), rather than show a list they would decline. The round closes as it did."""
    doc = secure_job(rounds=3)
    doc["spec"]["sites"].append({**doc["spec"]["sites"][0], "name": "site-3"})
    # A majority of four; equal weights, so the release weighs the same over either roster.
    doc["spec"]["security"] = {
        "secureAggregation": {"threshold": 3},
        "weighting": "equal",
    }
    doc["spec"]["joinGraceSeconds"] = 2
    lost, made = lose_round_2(tmp_path, doc, SITES)  # site-3 does not start
    everyone = [*SITES, "site-3"]
    # The successor waits for site-3 (it returns as soon as all four are in): on busy cores
    # site-3 could otherwise come after round 2 opened, and miss the try this test is about.
    doc["spec"]["joinGraceSeconds"] = 120
    again, result, remade = run_round_2_again(tmp_path, doc, lost, everyone)
    log = whole_log(again, "aggregator")
    assert "round 2 is run again, revealed before for site-0, site-1, site-2: site-3 leave" in log
    assert result.phase == "Succeeded", log
    assert [h.sites for h in result.history] == [SITES, SITES, everyone]
    assert " declined " not in log, log
    before, after = model_of(made), model_of(remade)
    for name, values in after.items():
        assert np.array_equal(values, before[name]), f"{name}: another sum than round 2 had"


def whole_log(job: LocalJob, name: str) -> str:
    return (job.logs / f"{name}.log").read_text(errors="replace")


def test_a_kept_release_reads_back_as_it_was_written(tmp_path: Path) -> None:
    """Every field, the arrays bit for bit in their order, a tensor and a count of one name
    apart; a fresh store (a restarted trainer) reads the label alone, then the release."""
    rng = np.random.default_rng(0)
    label = Label(round=4, scores_only=False, model=bytes(range(32)))
    release = Contribution(
        label=label,
        version=3,
        released={"w": rng.normal(size=(3, 5)), "b": rng.normal(size=5).astype(np.float32)},
        counts={"w": np.arange(7, dtype=np.uint32)},
        metrics={"train_loss": 0.25},
    )
    ContributionStore(tmp_path).keep(release)
    store = ContributionStore(tmp_path)
    assert store.label() == label
    assert label.answers(4, False) and not label.answers(4, True) and not label.answers(5, False)
    back = store.load()
    assert back is not None
    assert (back.label, back.version, back.metrics) == (label, 3, {"train_loss": 0.25})
    assert list(back.released) == ["w", "b"] and list(back.counts) == ["w"]
    for got, want in [*zip(back.released.values(), release.released.values(), strict=True),
                      (back.counts["w"], release.counts["w"])]:  # fmt: skip
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)


@pytest.mark.parametrize("kept_bytes", [500, 6], ids=["data cut", "header cut"])
def test_a_damaged_release_is_none_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kept_bytes: int
) -> None:
    """A file cut short (a disk that filled): nothing to send again, so the site declines a
    round it revealed, as before it kept anything; the log says which file and why."""
    release = Contribution(Label(1, False, b""), 0, {"w": np.ones(1000)}, {}, {})
    ContributionStore(tmp_path).keep(release)
    path = tmp_path / CONTRIBUTION_FILE
    path.write_bytes(path.read_bytes()[:kept_bytes])
    store = ContributionStore(tmp_path)
    assert store.label() in (None, release.label) and store.load() is None
    assert f"{path} cannot be read" in caplog.text
    assert "will not be answered again" in caplog.text


@pytest.mark.slow
def test_round_0_run_again_gets_the_same_statistics(tmp_path: Path) -> None:
    """Round 0 (the sites' statistics, masked) lost after its reveal: the sites send the
    counts they sent, and the successor agrees the same preprocessing from the same report."""
    doc = file_job(write_site_files(tmp_path / "data"), rounds=1, name="rerun-0")
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    doc["spec"]["task"].update(labels=["benign", "malignant"], localEpochs=150)
    clinics = [s["name"] for s in doc["spec"]["sites"]]
    first = local_job(tmp_path / "first", doc, tmp_path / "states", clinics)
    lost = tmp_path / "lost"
    try:
        first.start_all()
        first.wait_for(lambda p: p.open_round == 1 or p.round >= 1)
        shutil.copytree(tmp_path / "states", lost)
        assert first.wait_done().phase == "Succeeded"
    finally:
        first.stop()
    for site in clinics:
        assert kept_round(lost / site) == 0, "round 1's training ended before the copy"

    again = local_job(tmp_path / "again", doc, lost, clinics)
    result = again.run(timeout=240)
    assert result.phase == "Succeeded", again.log("aggregator")
    for site in clinics:
        log = (again.logs / f"{site}.log").read_text()
        assert "round 0: run again; this site sends the statistics it sent before" in log, log
    before, after = (saved_state(job.tmp / "ck") for job in (first, again))
    assert after["statistics"] == before["statistics"] and after["statistics"]
    assert after["preprocessing"] == before["preprocessing"]


def saved_state(ck: Path) -> dict:
    return json.loads(read_safetensors(ck / CHECKPOINT_FILE)[1]["fedkube"])
