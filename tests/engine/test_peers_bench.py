"""`bench/peers/` without the peers: its data are fedkube's own split, its round arithmetic is
right, and fedkube's column of the breast-cancer job runs through the harness end to end
(processes found by their tag, PSS and loopback bytes sampled, the final model scored). The
peers (Flower, FLARE) install from PyPI into venvs of their own and are the bench's to run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / "peers"


@pytest.fixture(scope="module", autouse=True)
def _bench_on_path() -> None:
    for path in (str(PEERS), str(ROOT / "bench")):
        if path not in sys.path:
            sys.path.insert(0, path)


def test_the_peers_train_on_the_rows_fedkube_trains_on(tmp_path: Path) -> None:
    import jobs
    from fedkube.data import load_site_data
    from fedkube.spec import load_job

    folder = jobs.prepare(jobs.JOBS["breast-cancer"], tmp_path / "bc")
    spec = load_job(folder / "job.yaml").spec
    held_out = 0
    for i in range(jobs.SITES):
        ours = load_site_data(spec, f"site-{i}", folder / "job.yaml")
        with np.load(folder / f"site-{i}.npz") as theirs:
            assert np.array_equal(theirs["x_train"], ours.x_train)
            assert np.array_equal(theirs["y_train"], ours.y_train)
        held_out += len(ours.y_test)
    with np.load(folder / "test.npz") as test:
        assert len(test["y"]) == held_out
    settings = json.loads((folder / "job.json").read_text())
    assert (settings["numFeatures"], settings["numClasses"], settings["rounds"]) == (30, 2, 20)


def test_a_round_costs_what_passes_beyond_its_slowest_site(tmp_path: Path) -> None:
    import measure

    events = tmp_path / "events.jsonl"
    lines = []
    for r, (start, slow) in enumerate([(0.0, 1.0), (3.0, 2.0), (7.0, 0.5)], start=1):
        lines += [{"site": 0, "round": r, "start": start, "end": start + slow},
                  {"site": 1, "round": r, "start": start, "end": start + slow / 2}]  # fmt: skip
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    rounds = measure.rounds_from_events(events, sites=2, rounds=3)
    assert rounds.first_start == 0.0
    # Round 2 ends at 5.0, round 1 at 1.0, its slowest site took 2.0: 2.0 beyond training.
    assert rounds.overheads == pytest.approx([2.0, 2.0])
    with pytest.raises(RuntimeError, match="5 site-rounds, expected 2 x 3"):
        events.write_text("".join(json.dumps(e) + "\n" for e in lines[:5]))
        measure.rounds_from_events(events, sites=2, rounds=3)


def test_fedkubes_column_runs_through_the_harness(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(PEERS / "run.py"), "--jobs", "breast-cancer", "--systems",
         "fedkube", "--work", str(tmp_path), "--json", str(tmp_path / "got.json")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (got,) = json.loads((tmp_path / "got.json").read_text())
    assert got["system"] == "fedkube" and got["rounds"] == 20
    assert got["accuracy"] > 0.85, got
    assert got["peak_pss_bytes"] > 50e6 and got["bytes_per_round"] > 0, got
    assert 0 < got["to_first_round"] < got["whole_run"], got
    assert "| fedkube 0.1" in out.stdout
