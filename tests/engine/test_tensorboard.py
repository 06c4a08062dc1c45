"""A run's rounds in TensorBoard: `fedkube run --tensorboard` writes each round as it is
printed, `fedkube tensorboard` writes a finished job's from its result.json, and both read back
(with TensorBoard's own reader) as the figures result.json holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fedkube import exit_codes
from fedkube.cli.tensorboard_log import read_result, write_result
from fedkube.errors import MissingExtra, OutputError
from fedkube.spec.progress import JobResult
from fedkube.testing import manifest, write_manifest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(logdir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def fedkube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedkube", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, JobResult]:
    folder = tmp_path_factory.mktemp("board")
    path = write_manifest(folder / "job.yaml", manifest("board", sites=3, rounds=4))
    out, logdir = folder / "out", folder / "tb"
    done = fedkube("run", str(path), "--output", str(out), "--tensorboard", str(logdir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"tensorboard --logdir {logdir}" in done.stdout
    return out, logdir, JobResult.model_validate_json((out / "result.json").read_bytes())


def test_a_run_writes_every_rounds_scalars_as_result_json_has_them(
    run: tuple[Path, Path, JobResult],
) -> None:
    _, logdir, result = run
    found = scalars(logdir)
    history = {h.round: h for h in result.history}
    assert [step for step, _ in found["global/accuracy"]] == [1, 2, 3, 4]
    for step, value in found["global/accuracy"]:
        assert value == pytest.approx(history[step].accuracy, abs=1e-6)
    for step, value in found["global/loss"]:
        assert value == pytest.approx(history[step].loss, rel=1e-6)
    assert [v for _, v in found["round/sites"]] == [3.0] * 4
    assert {s for s, _ in found["round/duration_seconds"]} == {1, 2, 3, 4}
    # Each site's scores, a line per site in one chart (a plain job publishes them).
    assert {t for t in found if t.startswith("site_accuracy/")} == {
        f"site_accuracy/site-{i}" for i in range(3)
    }


def test_a_finished_jobs_result_is_written_the_same_way(
    run: tuple[Path, Path, JobResult], tmp_path: Path
) -> None:
    out, logdir, result = run
    done = fedkube("tensorboard", str(out), "--logdir", str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr
    assert "wrote 4 rounds of board" in done.stdout
    live, again = scalars(logdir), scalars(tmp_path / "again")
    assert again["global/accuracy"] == live["global/accuracy"]
    # Each site's final scores sit at the last round.
    last = {s.name: s for s in result.sites}
    assert again["site_accuracy/site-1"] == [(4, pytest.approx(last["site-1"].accuracy))]


def test_a_private_jobs_sites_write_no_per_site_figure(
    run: tuple[Path, Path, JobResult], tmp_path: Path
) -> None:
    _, _, result = run
    private = result.model_copy(
        update={
            "sites": [s.model_copy(update={"accuracy": None, "loss": None}) for s in result.sites]
        }
    )
    write_result(private, tmp_path)
    assert not [t for t in scalars(tmp_path) if t.startswith(("site_accuracy", "site_loss"))]


def test_a_folder_without_a_result_is_named_and_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"result\.json: cannot read the job.s result"):
        read_result(tmp_path)
    (tmp_path / "result.json").write_text('{"job": 3}')
    with pytest.raises(OutputError, match=r"not a job.s result\.json"):
        read_result(tmp_path)
    done = fedkube("tensorboard", str(tmp_path / "nowhere"))
    assert done.returncode == exit_codes.BAD_INPUT
    assert "fedkube fetch --to" in done.stderr


def test_without_the_extra_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fedkube.cli import tensorboard_log

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingExtra, match=r"pip install 'fedkube\[tensorboard\]'"):
        tensorboard_log.RunBoard(tmp_path)
