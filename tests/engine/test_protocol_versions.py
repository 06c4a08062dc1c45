"""Consortium members upgrade one at a time (issue 25): an aggregator takes a trainer one
protocol version behind where the compatibility table says so, and refuses any other pair at
Subscribe, naming both versions and what to upgrade. The trainer one behind is the real one:
fedkube's own code at the last commit of protocol 6, taken from git, run as a process."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import grpc
import pytest
import yaml
from fedkube import __version__
from fedkube.cli.launch import spawn_fedkube
from fedkube.errors import ProtocolMismatch
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.proto.compat import PREVIOUS, admit
from fedkube.testing import LocalJob, manifest

from tests.support.engine_from_git import ask, engine_at

ROOT = Path(__file__).resolve().parents[2]
# The last commit whose trainer speaks protocol 6 (the one before this release's).
PROTOCOL_6_COMMIT = "c18b254eef3b96babc05f9cb6ba7f15d2967e97b"


@pytest.fixture(scope="module")
def previous_trainer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fedkube's engine as it was at protocol 6, unpacked from git (a PYTHONPATH entry)."""
    assert PREVIOUS.version == 6, "point PROTOCOL_6_COMMIT at the last commit of the new one"
    tree = engine_at(PROTOCOL_6_COMMIT, tmp_path_factory.mktemp("protocol-6"))
    assert ask(tree, "from fedkube.proto import PROTOCOL_VERSION as v; print(v)") == "6"
    return tree


def start_previous_trainer(job: LocalJob, tree: Path, site: str) -> subprocess.Popen[bytes]:
    args = ["trainer", "--manifest", str(job.path), "--site", site]
    args += ["--aggregator", f"127.0.0.1:{job.port}"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    job.trainers[site] = spawn_fedkube(args, job.logs / f"{site}.log", env=env, new_session=False)
    return job.trainers[site]


def test_a_trainer_one_version_behind_trains_in_a_job_without_secure_aggregation(
    tmp_path: Path, previous_trainer: Path
) -> None:
    job = LocalJob(tmp_path, manifest("one-behind", sites=3, rounds=3, min_sites=3))
    try:
        job.start_aggregator()
        start_previous_trainer(job, previous_trainer, "site-0")
        for site in ("site-1", "site-2"):
            job.start_trainer(site)
        result = job.wait_done()
    finally:
        job.stop()
    assert result.phase == "Succeeded"
    assert [h.sites for h in result.history] == [["site-0", "site-1", "site-2"]] * 3
    assert result.global_.accuracy > 0.85
    assert (
        f"site 'site-0' speaks fedkube protocol 6, one behind this aggregator's "
        f"{PROTOCOL_VERSION} (fedkube {__version__}): taken for this job" in job.log("aggregator")
    )


def test_a_trainer_one_version_behind_is_refused_by_a_secure_job_naming_both(
    tmp_path: Path, previous_trainer: Path
) -> None:
    doc = manifest("one-behind-secure", sites=3, rounds=1, min_sites=3)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    job = LocalJob(tmp_path, doc)
    try:
        job.start_aggregator()
        old = start_previous_trainer(job, previous_trainer, "site-0")
        code = old.wait(120)
    finally:
        job.stop()
    assert code != 0
    said = job.log("site-0")
    assert (
        f"site 'site-0' speaks fedkube protocol 6, this aggregator speaks {PROTOCOL_VERSION}"
        in said
    )
    assert "this job uses secure aggregation" in said
    assert f"upgrade site 'site-0' to fedkube {__version__} (protocol {PROTOCOL_VERSION})" in said


def test_two_versions_behind_or_one_ahead_are_refused_whatever_the_job() -> None:
    with pytest.raises(ProtocolMismatch, match=r"takes 6 too, no older: upgrade site 'a'"):
        admit("a", PROTOCOL_VERSION - 2, secure_aggregation=False)
    with pytest.raises(
        ProtocolMismatch, match=r"newer than this aggregator.s 7.*upgrade the aggregator"
    ):
        admit("a", PROTOCOL_VERSION + 1, secure_aggregation=False)
    assert admit("a", PROTOCOL_VERSION, secure_aggregation=True) is None


def test_one_version_names_the_package_the_chart_and_the_compatibility_table() -> None:
    chart = yaml.safe_load((ROOT / "helm" / "fedkube" / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == __version__
    table = (ROOT / "docs" / "compatibility.md").read_text()
    row = re.search(rf"^\| {re.escape(__version__)} .*$", table, re.M)
    assert row is not None, "docs/compatibility.md has no row for this release"
    cells = [c.strip() for c in row.group(0).strip("|").split("|")]
    assert cells[1] == chart["version"]
    assert cells[3] == str(PROTOCOL_VERSION)
    assert cells[4].startswith(f"{PROTOCOL_VERSION}; and {PREVIOUS.version} in jobs without")


def test_the_aggregator_tells_a_trainer_one_behind_so_at_subscribe(tmp_path: Path) -> None:
    """What a current trainer will log when its aggregator moves on: the notice rides on
    Subscribe's headers."""
    job = LocalJob(tmp_path, manifest("notice", sites=2, rounds=1, min_sites=2))
    try:
        job.start_aggregator()
        job.wait_for(lambda p: p.phase in ("Pending", "Running"))
        with grpc.insecure_channel(f"127.0.0.1:{job.port}") as channel:
            stub = pb_grpc.AggregatorStub(channel)
            join = pb.JoinRequest(job="notice", site="site-1", protocol_version=PREVIOUS.version)
            call = stub.Subscribe(join, timeout=20)
            headers = dict(call.initial_metadata())
            call.cancel()
    finally:
        job.stop()
    assert "one behind this aggregator's" in headers["fedkube-notice"]
