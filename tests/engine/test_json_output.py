"""--json on validate, run and stats: one JSON document on stdout for scripts, whatever the
outcome; the lines for people go to stderr."""

from __future__ import annotations

import json
from pathlib import Path

from fedkube.testing import manifest, write_manifest

from tests.support.cli import fedkube_cli as run


def test_validate_says_valid_or_lists_every_problem(tmp_path: Path) -> None:
    good = write_manifest(tmp_path / "good.yaml", manifest(sites=3, rounds=4))
    out = run(["validate", str(good), "--json"])
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["valid"] is True and doc["rounds"] == 4 and len(doc["sites"]) == 3
    bad_doc = manifest(sites=2, rounds=0)
    bad_doc["spec"]["minSitesPerRound"] = 5
    bad = write_manifest(tmp_path / "bad.yaml", bad_doc)
    refused = run(["validate", str(bad), "--json"])
    assert refused.returncode == 2
    doc = json.loads(refused.stdout)
    assert doc["valid"] is False and doc["source"].endswith("bad.yaml")
    assert any(p.startswith("spec.rounds") for p in doc["problems"]), doc


def test_run_and_stats_print_their_documents(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "job.yaml", manifest(sites=2, rounds=2))
    out = run(["run", str(path), "--output", "out", "--json"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["phase"] == "Succeeded" and result["roundsCompleted"] == 2
    assert "round    2/2" in out.stderr  # the people's lines, on stderr
    stats = run(["stats", str(path), "--output", "s", "--json"], cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert report == json.loads((tmp_path / "s" / "statistics.json").read_text())


def test_a_failed_run_says_so_in_json(tmp_path: Path) -> None:
    doc = manifest(sites=2, rounds=2, min_sites=2)
    doc["spec"]["task"].update(numFeatures=30, numClasses=2)
    doc["spec"]["sites"][0]["data"]["standardize"] = "site"
    doc["spec"]["sites"][1]["data"] = {"file": {"path": "missing.csv", "labelColumn": "y"}}
    path = write_manifest(tmp_path / "job.yaml", doc)
    out = run(["run", str(path), "--output", "out", "--json"], cwd=tmp_path)
    assert out.returncode == 1
    failed = json.loads(out.stdout)
    assert failed["phase"] == "Failed" and failed["exitCode"] == 1 and failed["job"]
    assert failed["message"]
