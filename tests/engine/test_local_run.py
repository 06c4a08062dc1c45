"""`fedkube run`: the README's main command, end to end with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from fedkube.testing import manifest, write_manifest

from tests.support.cli import fedkube_cli

ROOT = Path(__file__).resolve().parents[2]


run = fedkube_cli


def test_breast_cancer_example_runs_and_writes_its_result(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "breast-cancer.yaml").read_text())
    doc["spec"]["rounds"] = 6
    path = write_manifest(tmp_path / "bc.yaml", doc)
    out = run(["run", str(path), "--output", str(tmp_path / "out")], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert sum(ln.startswith("round ") for ln in lines) == 6
    for site in ("hospital-a", "hospital-e", "global"):
        assert any(ln.startswith(site) for ln in lines), out.stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["roundsCompleted"] == 6 and result["phase"] == "Succeeded"
    assert {s["name"] for s in result["sites"]} == {f"hospital-{c}" for c in "abcde"}
    assert result["global"]["accuracy"] > 0.9
    assert all(s["samples"] > 0 and 0 <= s["accuracy"] <= 1 for s in result["sites"])
    # Per-site figures for the global model and for each site's fine-tuned model, the AUC of
    # this binary task, and how far apart the sites are.
    assert all("personal_accuracy" in s and "auc" in s for s in result["sites"]), result["sites"]
    g = result["global"]
    assert {"personal_accuracy", "auc", "accuracySpread"} <= set(g)
    accs = [s["accuracy"] for s in result["sites"]]
    assert g["accuracySpread"] == max(accs) - min(accs)
    assert "personal" in out.stdout and "spread of site accuracy" in out.stdout

    from safetensors.numpy import load_file

    model = load_file(result["modelPath"])
    assert model["weight"].shape == (2, 30)
    card = json.loads(Path(result["modelCard"]).read_text())
    assert card["roundsCompleted"] == 6 and len(card["specSha256"]) == 64
    assert card["sitesContributed"] == [f"hospital-{c}" for c in "abcde"]
    # Each site's fine-tuned model stays in its own folder: never sent, not the global one.
    for c in "abcde":
        personal = load_file(
            tmp_path / "out" / "sites" / f"hospital-{c}" / "personal-model.safetensors"
        )
        assert personal.keys() == model.keys()
        assert not np.array_equal(personal["weight"], model["weight"])


def test_the_secure_example_shows_only_totals(tmp_path: Path) -> None:
    """Under secure aggregation no site's scores reach the aggregator: the table has none,
    and the global row's figures (the final evaluation, a secure round of counts) cover every
    site's held-out records."""
    doc = yaml.safe_load((ROOT / "examples" / "breast-cancer-secure.yaml").read_text())
    doc["spec"]["rounds"] = 4
    path = write_manifest(tmp_path / "secure.yaml", doc)
    out = run(["run", str(path), "--output", str(tmp_path / "out")], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    g = result["global"]
    assert g["fromCounts"] and g["accuracy"] > 0.85 and "accuracySpread" not in g
    assert g["evalSites"] == 5 and g["round"] == 4
    assert all("accuracy" not in s and "loss" not in s for s in result["sites"])
    rows = {
        ln.split()[0]: ln.split()
        for ln in out.stdout.splitlines()
        if ln.startswith(("hosp", "glob"))
    }
    assert rows["global"][2] == str(g["evalSamples"]) and int(rows["global"][2]) > 100
    assert all(set(rows[f"hospital-{c}"][2:]) == {"-"} for c in "abcde"), out.stdout
    assert "each site keeps its own scores; the global ones are from the sites' summed counts" in (
        out.stdout
    )


def test_custom_model_through_import_path(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "custom-model" / "job.yaml").read_text())
    doc["spec"]["rounds"] = 4
    path = write_manifest(tmp_path / "job.yaml", doc)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "examples" / "custom-model"))
    args = ["run", str(path), "--output", str(tmp_path / "out"), "--quiet"]
    # The manifest was copied away from its module: a local run allows the manifest's own
    # modules only (those in its folder), and what the user names.
    refused = run(args, cwd=tmp_path, env=env)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "spec.task.model.importPath: import path hospital_models:make_model is not" in said
    assert f"a local run allows the manifest's own modules (in {tmp_path})" in said
    out = run([*args, "--allow-import", "hospital_models:*"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["roundsCompleted"] == 4
    from safetensors.numpy import load_file

    assert "block.1.weight" in load_file(result["modelPath"])


def test_a_missing_import_path_fails_with_the_field_named(tmp_path: Path) -> None:
    doc = manifest(sites=2, rounds=2, model={"importPath": "no_such_module:factory"})
    path = write_manifest(tmp_path / "job.yaml", doc)
    allowed = ["--allow-import", "no_such_module:*"]
    out = run(["run", str(path), "--output", str(tmp_path / "out"), *allowed], cwd=tmp_path)
    assert out.returncode != 0
    assert "spec.task.model.importPath: cannot import module 'no_such_module'" in out.stdout


def test_rerun_resumes_and_fresh_starts_over(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "job.yaml", manifest(sites=2, rounds=3))
    first = run(["run", str(path), "--output", "out", "--quiet"], cwd=tmp_path)
    assert first.returncode == 0, first.stdout
    again = run(["run", str(path), "--output", "out", "--quiet"], cwd=tmp_path)
    assert again.returncode == 0 and "resuming from the checkpoint" in again.stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [h["round"] for h in result["history"]] == [1, 2, 3], "no round ran twice"
    fresh = run(["run", str(path), "--output", "out", "--quiet", "--fresh"], cwd=tmp_path)
    assert fresh.returncode == 0 and "resuming" not in fresh.stdout
    # Each attempt's logs stay, under a line that says how it started.
    for name in ("aggregator", "site-0", "site-1"):
        log = (tmp_path / "out" / "logs" / f"{name}.log").read_text()
        heads = [line for line in log.splitlines() if line.startswith("=== fedkube run started")]
        assert [h.split(", ", 1)[1] for h in heads] == [
            "from the first round ===",
            "resuming from the checkpoint ===",
            "fresh (--fresh) ===",
        ], name
        attempts = log.split("=== fedkube run started")[1:]
        assert all(len(a.splitlines()) > 1 for a in attempts), name  # each wrote its own


def test_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "job.yaml", manifest(sites=3, rounds=5000, local_epochs=5))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedkube", "run", str(path), "--output", str(tmp_path / "out")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("round "):
            break
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) == 4
    proc.send_signal(signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        for child in children:
            child.kill()
        pytest.fail("fedkube run went on 60 s after SIGINT (was it started with SIGINT ignored?)")
    assert proc.returncode == 130, rest
    assert "interrupted; stopping every process" in rest
    time.sleep(0.2)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_a_site_with_bad_data_is_reported_and_the_run_fails(tmp_path: Path) -> None:
    doc = manifest(sites=2, rounds=3, min_sites=2)
    doc["spec"]["task"].update(numFeatures=30, numClasses=2)
    doc["spec"]["sites"][0]["data"]["standardize"] = "site"  # as the file site: one way
    doc["spec"]["sites"][1]["data"] = {"file": {"path": "missing.csv", "labelColumn": "y"}}
    path = write_manifest(tmp_path / "job.yaml", doc)
    out = run(["run", str(path), "--output", str(tmp_path / "out")], cwd=tmp_path)
    assert out.returncode == 1
    assert "site site-1 stopped with exit code 2" in out.stdout
    assert "missing.csv" in out.stdout and "does not exist" in out.stdout


def test_the_manifests_aggregator_ports_are_used_when_given_and_refused_when_taken(
    tmp_path: Path,
) -> None:
    import socket

    from fedkube.cli.launch import free_port

    grpc_port, http_port = free_port(), free_port()
    doc = manifest(sites=2, rounds=2)
    doc["spec"]["aggregator"] = {"port": grpc_port, "httpPort": http_port}
    path = write_manifest(tmp_path / "job.yaml", doc)
    out = run(["run", str(path), "--output", "out"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    # Prometheus can be pointed at it: the port the manifest names.
    assert f"metrics for Prometheus at http://127.0.0.1:{http_port}/metrics" in out.stdout
    log = (tmp_path / "out" / "logs" / "aggregator.log").read_text()
    assert f"on 127.0.0.1:{grpc_port} (http {http_port})" in log
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the first run's
        held.bind(("127.0.0.1", http_port))
        held.listen()
        taken = run(["run", str(path), "--output", "again"], cwd=tmp_path)
    assert taken.returncode == 2
    assert f"spec.aggregator.httpPort: port {http_port} is in use on this machine" in (
        taken.stdout + taken.stderr
    )
    assert not (tmp_path / "again").exists()  # refused before anything started
