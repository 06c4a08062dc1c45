"""A site's policy on a laptop: `fedkube run --site-policy FILE` refuses a job as that site's
operator would, before anything starts; a trainer refuses terms its site did not admit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fedkube import exit_codes
from fedkube.spec.load import load_job
from fedkube.spec.terms import terms_digest

from tests.support.cli import fedkube_cli
from tests.support.site_files import file_job, write_site_files


def _job(tmp_path: Path, **spec: Any) -> Path:
    files = write_site_files(tmp_path / "data")
    doc = file_job(files, name="clinics", rounds=3, **spec)
    doc["spec"]["output"] = {"path": str(tmp_path / "out")}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _policy(tmp_path: Path, policy: dict[str, Any] | str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy if isinstance(policy, str) else yaml.safe_dump(policy))
    return path


def test_run_refuses_a_job_the_sites_default_policy_would_refuse(tmp_path: Path) -> None:
    job = _job(tmp_path)
    # An empty file is the default policy: what a fresh install of the chart enforces.
    out = fedkube_cli(["run", str(job), "--site-policy", str(_policy(tmp_path, ""))])
    assert out.returncode == exit_codes.BAD_INPUT, out.stdout + out.stderr
    err = out.stderr
    assert f"clinics, refused by the site policy {tmp_path / 'policy.yaml'}" in err
    for field, setting in (
        ("spec.privacy.recordLevel", "privacy.required"),
        ("spec.security.secureAggregation", "secureAggregation.required"),
        ("spec.security.mutualTls", "mutualTls.required"),
        ("spec.task.batchSize", "minBatchSizeWithoutDp"),
    ):
        assert f"{field}: " in err and f"(policy setting {setting})" in err, (field, err)
    # Refused before anything started: no process, no log, no output.
    assert not (tmp_path / "out").exists()


def test_the_same_job_runs_under_a_policy_that_allows_it(tmp_path: Path) -> None:
    job = _job(tmp_path)
    relaxed = {
        "privacy": {
            "required": True,
            "exemptDatasets": [{"path": f"{tmp_path}/data/*", "reason": "test rows"}],
        },
        "secureAggregation": {"required": False},
        "mutualTls": {"required": False},
    }
    policy = _policy(tmp_path, relaxed)
    out = fedkube_cli(["run", str(job), "--site-policy", str(policy), "--quiet"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "out" / "result.json").exists()


def test_stats_honours_the_policy_too(tmp_path: Path) -> None:
    job = _job(tmp_path, statistics={"minBinCount": 1})
    policy = _policy(
        tmp_path,
        {
            "privacy": {"required": False},
            "secureAggregation": {"required": False},
            "mutualTls": {"required": False},
            "minBatchSizeWithoutDp": 1,
        },
    )
    out = fedkube_cli(["stats", str(job), "--site-policy", str(policy)])
    assert out.returncode == exit_codes.BAD_INPUT, out.stdout + out.stderr
    assert "spec.statistics.minBinCount: 1 would report counts of fewer records" in out.stderr
    assert "(policy setting statistics.minBinCount)" in out.stderr


def test_a_wrong_policy_file_names_the_file_and_the_setting(tmp_path: Path) -> None:
    job = _job(tmp_path)
    for text, problem in (
        ("privacy: {required: maybe}\n", "privacy.required: Input should be a valid boolean"),
        ("privacy: {maxEpsilon: 3}\n", "privacy.maxEpsilon: Extra inputs are not permitted"),
        ("[1, 2]\n", "(policy): expected a mapping of settings"),
    ):
        policy = _policy(tmp_path, text)
        out = fedkube_cli(["run", str(job), "--site-policy", str(policy)])
        assert out.returncode == exit_codes.BAD_INPUT, out.stderr
        assert str(policy) in out.stderr and problem in out.stderr, out.stderr
    missing = fedkube_cli(["run", str(job), "--site-policy", str(tmp_path / "none.yaml")])
    assert missing.returncode == exit_codes.BAD_INPUT
    assert "cannot read the site policy" in missing.stderr


def test_a_trainer_refuses_terms_its_site_did_not_admit(tmp_path: Path) -> None:
    job = _job(tmp_path)
    admitted = terms_digest(load_job(job))
    # The manifest the trainer reads has one round more than the site admitted.
    changed = yaml.safe_load(job.read_text())
    changed["spec"]["rounds"] = 4
    job.write_text(yaml.safe_dump(changed))
    out = fedkube_cli(
        [
            "trainer",
            "--manifest",
            str(job),
            "--site",
            "clinic-a",
            # Nothing listens here: the refusal comes before any connection.
            "--aggregator",
            "127.0.0.1:9",
            "--terms-sha256",
            admitted,
        ],
        timeout=60,
    )
    assert out.returncode == exit_codes.BAD_INPUT, out.stderr
    assert "site clinic-a" in out.stderr
    assert "learning terms" in out.stderr and "are not the ones this site admitted" in out.stderr
