"""One privacy budget per dataset, on the real control plane (issue 24): the site's cap
(Helm site.epsilonCap, 5 here) bounds the sum over every job that reads the same records,
whatever the jobs are called. A second job planning epsilon 3 while the first holds 3 is
refused before any pod (the operator plans it from the ledgers); a trainer pod deleted mid-job
comes back, and the dataset's epsilon never goes down."""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fedkube_operator.site_placement import site_trainer_name

from tests.kube_harness.jobs import get_job, wait_job
from tests.kube_harness.operator_env import STATE_CLAIM
from tests.kube_harness.tenant_site import (
    Site,
    approve,
    awaiting,
    compliant,
    no_pod_reached_the_data,
    refusal_message,
    secrets,
    strict_site_fixture,
)

SITE_CAP = 5.0


site = strict_site_fixture("operator-budget", "--epsilon-cap", f"{SITE_CAP:g}")


def _planning_3_doc(site: Site, name: str, tmp_path: Path) -> dict[str, Any]:
    """A job the policy admits, whose DP-SGD would spend far more than 3 over its rounds:
    it plans (and stops at) its own cap, 3."""
    doc = compliant(site, site.allowed, name)
    doc["spec"].update(rounds=60, roundTimeoutSeconds=15)
    doc["spec"]["privacy"]["recordLevel"].update(noiseMultiplier=3.0, epsilonCap=3.0)
    secrets(site, name, [s["name"] for s in doc["spec"]["sites"]], tmp_path / name)
    return doc


def _planning_3(site: Site, name: str, tmp_path: Path) -> dict[str, Any]:
    doc = _planning_3_doc(site, name, tmp_path)
    site.apply(site.allowed, doc)
    awaiting(site, name, "NoApproval")
    approve(site, name)
    return doc


def _ledger(site: Site, file: str) -> dict[str, Any] | None:
    """The dataset ledger of one of the site's files, as the trainers keep it on the state
    claim (one per dataset, across jobs)."""
    folder = site.claim(STATE_CLAIM) / "datasets"
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            ledger: dict[str, Any] = json.loads(path.read_text())
        except ValueError:
            continue  # never half-written (write, then rename); a read that raced a rename
        if ledger["dataset"]["file"] == file:
            return ledger
    return None


def _uid(site: Site, pod: str) -> str | None:
    out = site.cp.kubectl("get", "pod", pod, "-n", site.home, "-o", "json", check=False)
    return str(json.loads(out.stdout)["metadata"]["uid"]) if out.returncode == 0 else None


def _site_status(site: Site, ready: Any, timeout: float = 60) -> dict[str, Any]:
    end = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < end:
        out = site.as_tenant("get", "federatedsite", "local", "-o", "json", check=False)
        if out.returncode == 0:
            status = json.loads(out.stdout).get("status") or {}
            if ready(status):
                return status
        time.sleep(0.5)
    raise AssertionError(f"the site's status did not show it in {timeout} s: {status}")


def _running(site: Site, pod: str, before: str | None) -> bool:
    """A new pod of that name (another uid) has started."""
    out = site.cp.kubectl("get", "pod", pod, "-n", site.home, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    found = json.loads(out.stdout)
    return bool(found["metadata"]["uid"] != before and found["status"].get("phase") == "Running")


def _spent(site: Site, job: str, file: str = "clinic-a.csv") -> float:
    ledger = _ledger(site, file)
    entry = (ledger or {}).get("jobs", {}).get(f"{site.allowed}/{job}", {})
    return float(entry.get("spent", 0.0))


def test_a_second_job_over_the_same_records_is_refused_and_a_restart_never_lowers_epsilon(
    site: Site, tmp_path: Path
) -> None:
    _planning_3(site, "first", tmp_path)
    wait_job(
        site.cp, site.allowed, "first", lambda s: s.get("round", 0) >= 2, log=site.operator.log
    )
    ledger = _ledger(site, "clinic-a.csv")
    assert ledger is not None, "the trainer keeps no ledger for its dataset"
    entry = ledger["jobs"][f"{site.allowed}/first"]
    assert entry["reserved"] == 3.0 and 0 < entry["spent"] <= 3.0, entry
    assert (
        ledger["dataset"]["volume"].startswith("claim/") and len(ledger["dataset"]["sha256"]) == 64
    )

    # The site's trainer pod is deleted mid-job: it comes back, and the dataset's epsilon
    # for the job only ever grows, read every 0.2 s through the gap.
    # (It runs in the site's namespace: the tenant cannot even see it.)
    pod = site_trainer_name(site.allowed, "first", "clinic-a")
    before = _uid(site, pod)
    site.cp.kubectl("delete", "pod", pod, "-n", site.home, "--wait=false")
    seen = [_spent(site, "first")]
    end = time.monotonic() + 120
    while time.monotonic() < end and not _running(site, pod, before):
        seen.append(_spent(site, "first"))
        time.sleep(0.2)
    back = len(seen)
    # Every site takes part in every round (minSitesPerRound 3): two rounds after the new
    # pod runs are two rounds it trained.
    at = get_job(site.cp, site.allowed, "first")["status"].get("round", 0)
    while time.monotonic() < end:
        seen.append(_spent(site, "first"))
        if get_job(site.cp, site.allowed, "first")["status"].get("round", 0) >= at + 2:
            break
        time.sleep(0.2)
    seen.append(_spent(site, "first"))
    assert _uid(site, pod) not in (None, before), "the trainer pod did not come back"
    assert all(b >= a for a, b in itertools.pairwise(seen)), seen
    assert seen[-1] > seen[back - 1], "the trainer that came back trained no further round"
    assert seen[-1] <= 3.0

    # A second job, under another name, over the same files: the first holds 3 of the
    # site's 5 on each. The operator reads the ledgers (their row counts, written by the
    # first job's trainers) and plans the second's epsilon with the same accountant: it is
    # refused before any pod, before the site admin is even asked.
    doc = _planning_3_doc(site, "second", tmp_path)
    site.apply(site.allowed, doc)
    message = refusal_message(site, site.allowed, "second")
    assert message.startswith(
        "spec.privacy.recordLevel.epsilonCap: site 'clinic-a' would spend epsilon 3 on "
        "dataset 'clinic-a.csv' on claim/site-data"
    ), message
    # The first holds its reservation, 3, or (a site that reached its cap and finished)
    # what it spent, just under 3.
    held = re.search(
        rf"other jobs hold ([0-9.]+) of this site's cap {SITE_CAP:g} \(Helm value "
        rf"site.epsilonCap\): {site.allowed}/first ([0-9.]+); ([0-9.]+) is left",
        message,
    )
    assert held is not None, message
    assert 2.5 < float(held[1]) == float(held[2]) <= 3.0, message
    assert float(held[3]) == pytest.approx(SITE_CAP - float(held[1]), abs=0.01)
    no_pod_reached_the_data(site, site.allowed, "second")
    for file in ("clinic-a.csv", "clinic-b.parquet", "clinic-c.csv"):
        ledger = _ledger(site, file)
        assert ledger is not None and f"{site.allowed}/second" not in ledger["jobs"], ledger
        assert ledger["dataset"]["rows"] > 0, ledger["dataset"]

    # The site's status, as the tenant reads it (every authenticated user may): each
    # dataset's budget per job, and the refused job with the reason.
    def reported(status: dict[str, Any]) -> bool:
        jobs = {j["job"]: j for j in status.get("jobs", [])}
        return bool(jobs.get(f"{site.allowed}/second", {}).get("refused"))

    status = _site_status(site, reported)
    assert status["epsilonCap"] == SITE_CAP and status["dataVolume"].startswith("claim/")
    assert status["policy"]["privacy"]["required"] is True
    assert status["ledgers"].startswith("read from ")
    files = {d["file"]: d for d in status["datasets"]}
    assert set(files) == {"clinic-a.csv", "clinic-b.parquet", "clinic-c.csv"}
    a = files["clinic-a.csv"]
    [first] = [j for j in a["jobs"] if j["job"] == f"{site.allowed}/first"]
    assert first["reserved"] == 3.0 and first["spent"] >= seen[-1]
    assert a["left"] == pytest.approx(SITE_CAP - a["held"], abs=1e-5)
    jobs = {j["job"]: j for j in status["jobs"]}
    second = jobs[f"{site.allowed}/second"]
    assert second["phase"] == "Failed" and "site.epsilonCap" in second["refused"]
    assert second["approval"] == ""  # refused before the site admin was asked
    assert jobs[f"{site.allowed}/first"]["approval"] == "Approved"
    listed = site.as_tenant("get", "federatedsites").stdout
    assert "local" in listed and "1 refused" in listed, listed

    site.as_tenant("delete", "fj", "first", "second", "-n", site.allowed)
