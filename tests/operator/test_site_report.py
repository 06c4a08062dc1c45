"""The site's status (FederatedSite), as a pure function of the jobs and the ledgers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedkube_operator.settings import OperatorSettings
from fedkube_operator.site_report import site_report

SETTINGS = replace(
    OperatorSettings(image="fedkube/trainer:test"),
    data_claim="ward-data",
    data_namespaces=("ward",),
    epsilon_cap=5.0,
)
NOW = "2026-12-06T00:00:00Z"


def job(name: str, phase: str, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ward", "name": name},
        "status": {"phase": phase, "conditions": list(conditions)},
    }


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def test_the_site_reads_its_jobs_approvals_refusals_and_each_datasets_budget() -> None:
    jobs = [
        job("first", "Running", condition("AwaitingSiteApproval", "False", "Approved")),
        job("waiting", "Pending", condition("AwaitingSiteApproval", "True", "TermsChanged")),
        job(
            "second",
            "Failed",
            condition("SpecValid", "False", "RefusedBySite", "... site.epsilonCap ..."),
            condition("AwaitingSiteApproval", "False", "Approved"),
        ),
        job("plain", "Succeeded", condition("SpecValid", "True", "Valid")),
    ]
    ledgers = [
        {
            "dataset": {"volume": "claim/ward-data", "file": "a.csv", "sha256": "ab" * 32},
            "held": 3.5,
            "jobs": {
                "ward/first": {"reserved": 3.0, "spent": 1.25, "heldOut": 0.25},
                "ward/old": {"reserved": 1.0, "spent": 0.5, "finished": True},
            },
        }
    ]
    status = site_report(SETTINGS, jobs, ledgers, "read from /x", NOW)
    doc = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert doc["epsilonCap"] == 5.0 and doc["dataVolume"] == "claim/ward-data"
    assert doc["dataNamespaces"] == ["ward"] and doc["policy"]["privacy"]["required"] is True
    [dataset] = doc["datasets"]
    assert dataset["held"] == 3.5 and dataset["left"] == 1.5
    assert dataset["jobs"] == [
        {"job": "ward/first", "reserved": 3.0, "spent": 1.25, "heldOut": 0.25, "finished": False},
        {"job": "ward/old", "reserved": 1.0, "spent": 0.5, "heldOut": 0.0, "finished": True},
    ]
    by_name = {j["job"]: j for j in doc["jobs"]}
    assert by_name["ward/first"] == {
        "job": "ward/first",
        "phase": "Running",
        "approval": "Approved",
        "refused": "",
    }
    assert by_name["ward/waiting"]["approval"] == "TermsChanged"
    assert by_name["ward/second"]["refused"] == "... site.epsilonCap ..."
    assert by_name["ward/plain"]["approval"] == "" and by_name["ward/plain"]["refused"] == ""
    assert doc["summary"] == "1 datasets; 4 jobs: 1 running, 1 awaiting approval, 1 refused"
    assert doc["ledgers"] == "read from /x" and doc["updatedAt"] == NOW


def test_without_a_cap_nothing_is_left_to_say() -> None:
    ledgers = [
        {
            "dataset": {"volume": "claim/ward-data", "file": "a.csv", "sha256": "ab" * 32},
            "held": 2.0,
            "jobs": {},
        }
    ]
    status = site_report(replace(SETTINGS, epsilon_cap=None), [], ledgers, "", NOW)
    assert status.datasets[0].left is None
