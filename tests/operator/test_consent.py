"""The site's consent as the operator applies it (pure, no cluster): a SiteApproval pinned to
a job's terms admits it; none, an expired one, or one of other terms starts nothing that reads
the site's data, and withdraws a site whose trainers run."""

from __future__ import annotations

import copy
import datetime
from dataclasses import replace
from typing import Any

from fedkube.spec import parse_job
from fedkube.spec.approval import SiteApproval, approval_document
from fedkube.spec.site_policy import SitePolicy
from fedkube.spec.terms import terms_digest
from fedkube_operator.consent import parse_approvals
from fedkube_operator.desired import aggregator_name, config_map, trainer_name
from fedkube_operator.plan import plan
from fedkube_operator.plan_model import Observed

from tests.operator.test_plan import NOW, pod
from tests.operator.test_site_policy import SITE, data_job

REQUIRED = replace(SITE, policy=SitePolicy())  # approval: required, the default
JOB = "breast-cancer"


def approval(
    r: dict[str, Any],
    *,
    namespace: str = "hospitals",
    name: str = JOB,
    site: str | None = None,
    expires: str | None = None,
) -> SiteApproval:
    doc = approval_document(
        namespace,
        name,
        site,
        terms_digest(parse_job(r)),
        "words",
        datetime.datetime.fromisoformat(expires) if expires else None,
    )
    return SiteApproval.model_validate(doc)


def seen(approvals: list[SiteApproval], pods: dict[str, Any] | None = None, **kw: Any) -> Observed:
    return Observed(
        pods=pods or {},
        has_service=False,
        has_config_map=kw.pop("has_config_map", False),
        progress=None,
        now=NOW,
        approvals=approvals,
        **kw,
    )


def condition(p: Any) -> Any:
    return next(c for c in p.status.conditions if c.type == "AwaitingSiteApproval")


def running(r: dict[str, Any]) -> dict[str, Any]:
    names = [aggregator_name(JOB)] + [trainer_name(JOB, s["name"]) for s in r["spec"]["sites"]]
    return {n: pod("Running") for n in names}


def test_without_an_approval_nothing_starts_and_the_job_says_how_to_approve() -> None:
    p = plan(data_job(), seen([]), REQUIRED)
    assert p.create == [] and p.status.phase == "Pending"
    c = condition(p)
    assert c.status == "True" and c.reason == "NoApproval"
    assert "fedkube approve -n hospitals breast-cancer" in c.message
    assert [e.reason for e in p.events] == ["Admitted", "AwaitingSiteApproval"]
    assert {s.phase for s in p.status.sites} == {"AwaitingApproval"}


def test_an_approval_of_the_jobs_terms_admits_it() -> None:
    r = data_job()
    p = plan(r, seen([approval(r)]), REQUIRED)
    assert sum(o["kind"] == "Pod" for o in p.create) == 6
    c = condition(p)
    assert c.status == "False" and c.reason == "Approved"
    assert "SiteApproval hospitals.breast-cancer" in c.message


def test_an_approval_for_another_job_namespace_or_site_admits_nothing() -> None:
    r = data_job()
    for other in (
        approval(r, name="other-job"),
        approval(r, namespace="elsewhere"),
        approval(r, site="hospital-z"),
    ):
        p = plan(r, seen([other]), replace(REQUIRED, site=None))
        assert p.create == [], other.spec
    # An approval for this cluster's site (Helm site.name) counts.
    mine = replace(REQUIRED, site="hospital-a")
    one_site = data_job()
    for s in one_site["spec"]["sites"][1:]:
        s["remote"] = True
    p = plan(one_site, seen([approval(one_site, site="hospital-a")]), mine)
    assert condition(p).reason == "Approved", condition(p)


def test_terms_changed_after_approval_hold_the_sites_training_until_approved_again() -> None:
    approved = data_job()
    changed = data_job(rounds=40)
    r = copy.deepcopy(changed)
    r["status"] = {"phase": "Running", "startTime": NOW, "conditions": []}
    p = plan(r, seen([approval(approved)], running(r), has_config_map=True), REQUIRED)
    c = condition(p)
    assert c.status == "True" and c.reason == "TermsChanged", c
    trainers = sorted(trainer_name(JOB, s["name"]) for s in r["spec"]["sites"])
    assert p.delete_pods == trainers  # the aggregator goes on; the site withdraws
    assert {s.phase for s in p.status.sites} == {"Withdrawn"}
    assert not [o for o in p.create if o["kind"] == "Pod"]
    # Approved again, for the new terms: the trainers come back.
    r["status"] = p.status.model_dump(by_alias=True, mode="json")
    p = plan(r, seen([approval(changed)], {aggregator_name(JOB): pod("Running")}), REQUIRED)
    assert condition(p).reason == "Approved"
    assert sorted(o["metadata"]["name"] for o in p.create if o["kind"] == "Pod") == trainers
    assert "SiteApproved" in [e.reason for e in p.events]


def test_an_expired_approval_starts_nothing_and_stops_what_runs() -> None:
    r = data_job()
    expired = approval(r, expires="2026-11-27T23:59:59+00:00")  # NOW is 2026-11-28T00:00:00Z
    p = plan(r, seen([expired]), REQUIRED)
    assert p.create == [] and condition(p).reason == "ApprovalExpired"
    assert "expired at 2026-11-27T23:59:59+00:00" in condition(p).message
    started = copy.deepcopy(r)
    started["status"] = {"phase": "Running", "startTime": NOW, "conditions": []}
    p = plan(started, seen([expired], running(r), has_config_map=True), REQUIRED)
    assert len(p.delete_pods) == 5
    later = approval(r, expires="2026-11-29T00:00:00+00:00")
    assert condition(plan(r, seen([later]), REQUIRED)).reason == "Approved"


def test_the_policy_alone_admits_when_the_site_says_so_and_built_in_data_needs_none() -> None:
    p = plan(data_job(), seen([]), SITE)  # approval: policy
    assert condition(p).status == "False" and condition(p).reason == "AdmittedByPolicy"
    from tests.operator.test_plan import resource

    p = plan(resource(), seen([]), REQUIRED)  # sklearn data: nothing of the site's is read
    assert not [c for c in p.status.conditions if c.type == "AwaitingSiteApproval"]
    assert p.create


def test_a_config_map_the_operator_did_not_write_is_rewritten() -> None:
    r = data_job()
    r["metadata"]["uid"] = "u-1"
    ours = config_map(r)
    tenants = copy.deepcopy(ours)
    tenants["metadata"].pop("ownerReferences")
    tenants["data"]["job.yaml"] = "spec: {}\n"
    for found in (tenants, dict(ours, metadata={**ours["metadata"], "ownerReferences": []})):
        p = plan(r, seen([approval(r)], has_config_map=True, config_map=found), REQUIRED)
        assert p.replace == [ours] and "ManifestRewritten" in [e.reason for e in p.events]
    p = plan(r, seen([approval(r)], has_config_map=True, config_map=ours), REQUIRED)
    assert p.replace == []


def test_an_approval_that_does_not_parse_admits_nothing() -> None:
    r = data_job()
    good = approval(r).model_dump(mode="json", by_alias=True)
    broken = copy.deepcopy(good)
    broken["spec"]["termsSha256"] = "not a digest"
    assert [a.name for a in parse_approvals([broken, good])] == [good["metadata"]["name"]]
