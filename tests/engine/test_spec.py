"""The job spec: valid manifests load; every problem is named by its field path."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from fedkube.errors import SpecError
from fedkube.spec import load_job, parse_job
from fedkube.testing import manifest, write_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    job = load_job(path)
    assert job.spec.sites


def problems(doc: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_job(doc, "job.yaml")
    assert "job.yaml" in str(e.value)
    return e.value.problems


def test_missing_sites_names_the_field() -> None:
    doc = manifest()
    del doc["spec"]["sites"]
    assert problems(doc) == ["spec.sites: Field required"]


def test_min_sites_above_site_count() -> None:
    doc = manifest(sites=2, min_sites=3)
    (p,) = problems(doc)
    assert p.startswith("spec:") and "minSitesPerRound (3) is above the number of sites (2)" in p


def test_duplicate_site_names() -> None:
    doc = manifest(sites=3)
    doc["spec"]["sites"][2]["name"] = "site-0"
    (p,) = problems(doc)
    assert "site names must be unique; repeated: site-0" in p


def test_negative_learning_rate_and_unknown_strategy_are_both_reported() -> None:
    doc = manifest()
    doc["spec"]["task"]["learningRate"] = -0.1
    doc["spec"]["strategy"] = {"name": "fedmagic"}
    found = problems(doc)
    assert any(
        p.startswith("spec.task.learningRate: Input should be greater than 0") for p in found
    )
    assert any(p.startswith("spec.strategy") and "fedmagic" in p for p in found), found


def test_bad_site_name_and_partition_out_of_range() -> None:
    doc = manifest(sites=2)
    doc["spec"]["sites"][0]["name"] = "Site_A"
    doc["spec"]["sites"][1]["data"]["sklearn"]["partition"] = 5
    found = problems(doc)
    assert any(p.startswith("spec.sites[0].name: String should match pattern") for p in found)
    assert any(
        p.startswith("spec.sites[1].data.sklearn:") and "partition 5 is out of range" in p
        for p in found
    ), found


def test_unknown_field_is_refused() -> None:
    doc = manifest()
    doc["spec"]["task"]["learnRate"] = 0.1
    assert "spec.task.learnRate: Extra inputs are not permitted" in problems(doc)


def test_file_sites_need_shapes() -> None:
    doc = manifest(sites=1)
    doc["spec"]["sites"][0]["data"] = {"file": {"path": "a.csv", "labelColumn": "y"}}
    (p,) = problems(doc)
    assert "task.numFeatures (or task.features) and task.numClasses (or task.labels) are" in p


def test_fingerprint_ignores_rounds_but_not_task() -> None:
    a = parse_job(manifest(rounds=3))
    b = parse_job(manifest(rounds=9))
    doc = copy.deepcopy(manifest())
    doc["spec"]["task"]["learningRate"] = 0.5
    assert a.spec.training_fingerprint() == b.spec.training_fingerprint()
    assert a.spec.training_fingerprint() != parse_job(doc).spec.training_fingerprint()


def test_validate_command_reports_every_problem(tmp_path: Path) -> None:
    doc = manifest(sites=2, min_sites=5)
    doc["spec"]["task"]["batchSize"] = 0
    path = write_manifest(tmp_path / "bad.yaml", doc)
    run = subprocess.run(
        [sys.executable, "-m", "fedkube", "validate", str(path)], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "spec.task.batchSize: Input should be greater than or equal to 1" in run.stderr
    assert str(path) in run.stderr


def test_validate_command_on_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("spec: [unclosed\n")
    for target, needle in ((bad, "not valid YAML"), (tmp_path / "nope.yaml", "cannot read it")):
        run = subprocess.run(
            [sys.executable, "-m", "fedkube", "validate", str(target)],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and needle in run.stderr, run.stderr
        assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("security", "privacy", "says"),
    [
        (
            {"secureAggregation": {}, "robustAggregation": {"method": "median"}},
            {},
            "spec.security: robustAggregation (median) needs every update in the clear, which "
            "secureAggregation hides from the aggregator; choose one",
        ),
        (
            {"secureAggregation": {}, "updateNormBound": 5},
            {},
            "spec.security: updateNormBound checks each update's norm, which the aggregator "
            "cannot see under secureAggregation",
        ),
        (
            {"secureAggregation": {"threshold": 4}},
            {},
            "spec: security.secureAggregation needs at least 4 sites to unmask a sum; the job "
            "has 3",
        ),
        (
            {"secureAggregation": {"threshold": 1}},
            {},
            "spec.security.secureAggregation.threshold: Input should be greater than or equal to 2",
        ),
        (
            {"secureAggregation": {}},
            {"updateLevel": {"clipNorm": 1, "noiseMultiplier": 1, "adaptiveClipping": {}}},
            "spec: privacy.updateLevel.adaptiveClipping needs each site's clipping outcome, "
            "which secure aggregation hides",
        ),
    ],
    ids=["median", "norm-bound", "threshold-above-sites", "threshold-one", "adaptive-clipping"],
)
def test_combinations_secure_aggregation_cannot_serve(
    security: dict, privacy: dict, says: str
) -> None:
    doc = manifest(sites=3, security=security, privacy=privacy)
    (p,) = problems(doc)
    assert p.startswith(says), p


def test_secure_aggregation_defaults_to_a_majority_and_raises_the_quorum() -> None:
    job = parse_job(manifest(sites=5, min_sites=1, security={"secureAggregation": {}}))
    secure = job.spec.security.secure_aggregation
    assert secure is not None and secure.threshold_for(5) == 3
    assert job.spec.quorum() == 3
    with_dp = parse_job(
        manifest(
            sites=5,
            security={"secureAggregation": {}},
            privacy={"updateLevel": {"clipNorm": 1.0, "noiseMultiplier": 1.1}},
        )
    )
    assert with_dp.spec.privacy.update_level is not None


@pytest.mark.parametrize("across", ["remote", "endpoint"])
def test_a_job_across_organisations_needs_mutual_tls(tmp_path: Path, across: str) -> None:
    doc = manifest(sites=3)
    if across == "remote":
        doc["spec"]["sites"][2] = {"name": "site-2", "remote": True}
    else:
        doc["spec"]["aggregator"] = {"endpoint": "aggregator.hospitals.example:7070"}
    path = write_manifest(tmp_path / "job.yaml", doc)
    out = subprocess.run(
        [sys.executable, "-m", "fedkube", "validate", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "security.mutualTls is required when a site is remote or aggregator.endpoint" in (
        out.stderr
    )
    doc["spec"]["security"] = {"mutualTls": {}}
    parse_job(doc)


def test_a_secure_aggregation_threshold_must_be_a_majority() -> None:
    doc = manifest(sites=4)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    with pytest.raises(SpecError, match="threshold 2 is not above half the 4 sites"):
        parse_job(doc)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    assert parse_job(doc).spec.quorum() == 3
