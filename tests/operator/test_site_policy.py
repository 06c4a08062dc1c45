"""The site's policy, as the operator applies it (pure, no cluster): what a job must promise
before it reads the site's data, the safe defaults, and the terms each trainer is pinned to."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
from fedkube.spec import parse_job
from fedkube.spec.site_policy import SitePolicy, parse_site_policy
from fedkube.spec.terms import terms_digest
from fedkube_operator.desired import trainer_name
from fedkube_operator.plan import plan
from fedkube_operator.settings import OperatorSettings

from tests.operator.test_plan import SETTINGS, file_resource, observed, pod, resource

# A site that offers its data to the "hospitals" namespace, under the default policy but for
# consent: meeting the policy admits a job here (consent has tests of its own).
SITE = replace(
    SETTINGS,
    data_claim="ward-data",
    data_namespaces=("hospitals",),
    policy=SitePolicy(approval="policy"),
)
COMPLIANT = {
    "privacy": {
        "recordLevel": {
            "noiseMultiplier": 1.0,
            "maxGradNorm": 1.0,
            "delta": 1e-5,
            "epsilonCap": 3.0,
        }
    },
    "security": {"secureAggregation": {}, "mutualTls": {}},
}


def data_job(**spec: Any) -> dict[str, Any]:
    """A job whose five sites read their files from the site's data volume."""
    r = file_resource("a.csv")
    # Without a privacy block, round 0 may travel in the clear: no DP-only validation rule.
    r["spec"].update(copy.deepcopy(COMPLIANT))
    for key, value in spec.items():
        if value is None:
            r["spec"].pop(key, None)
        else:
            r["spec"][key] = value
    return r


def refusal(r: dict[str, Any], settings: OperatorSettings = SITE) -> str:
    """The RefusedBySite message, after checking that nothing was created."""
    p = plan(r, observed(), settings)
    assert p.create == [], [o["metadata"]["name"] for o in p.create]
    assert p.status.phase == "Failed"
    condition = next(c for c in p.status.conditions if c.type == "SpecValid")
    assert condition.status == "False" and condition.reason == "RefusedBySite"
    return condition.message


def test_a_job_that_promises_what_the_policy_requires_runs_once_the_site_approves() -> None:
    p = plan(data_job(), observed(), replace(SITE, policy=SitePolicy()))
    assert p.status.phase == "Pending" and p.create == [], p.status.message
    p = plan(data_job(), observed(), SITE)
    assert p.status.phase != "Failed", p.status.message
    assert sum(o["kind"] == "Pod" for o in p.create) == 6


@pytest.mark.parametrize(
    ("change", "field", "setting"),
    [
        ({"privacy": None}, "spec.privacy.recordLevel", "site.policy.privacy.required"),
        (
            {
                "privacy": {
                    "recordLevel": {"noiseMultiplier": 0.3, "maxGradNorm": 1.0, "epsilonCap": 3}
                }
            },
            "spec.privacy.recordLevel.noiseMultiplier",
            "site.policy.privacy.minNoiseMultiplier",
        ),
        (
            {"privacy": {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}},
            "spec.privacy.recordLevel.epsilonCap",
            "site.policy.privacy.maxEpsilonPerJob",
        ),
        (
            {
                "privacy": {
                    "recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0, "epsilonCap": 50}
                }
            },
            "spec.privacy.recordLevel.epsilonCap",
            "site.policy.privacy.maxEpsilonPerJob",
        ),
        (
            {
                "privacy": {
                    "recordLevel": {
                        "noiseMultiplier": 1.0,
                        "maxGradNorm": 1.0,
                        "epsilonCap": 3,
                        "delta": 1e-3,
                    }
                }
            },
            "spec.privacy.recordLevel.delta",
            "site.policy.privacy.maxDelta",
        ),
        (
            # Without secure aggregation, DP on files is refused by validation (round 0 would
            # travel in the clear): the site names both what is missing.
            {"security": {"mutualTls": {}}, "privacy": None},
            "spec.security.secureAggregation",
            "site.policy.secureAggregation.required",
        ),
        (
            {"security": {"secureAggregation": {}}},
            "spec.security.mutualTls",
            "site.policy.mutualTls.required",
        ),
        (
            {"aggregator": {"endpoint": "collector.example.org:443"}},
            "spec.aggregator.endpoint",
            "site.policy.aggregators.endpoints",
        ),
        (
            {"statistics": {"minBinCount": 1}},
            "spec.statistics.minBinCount",
            "site.policy.statistics.minBinCount",
        ),
        (
            {"statistics": {"minSiteRows": 2}},
            "spec.statistics.minSiteRows",
            "site.policy.statistics.minSiteRows",
        ),
    ],
    ids=[
        "no DP",
        "noise below the floor",
        "no epsilon cap",
        "epsilon cap above the policy",
        "delta above the policy",
        "no secure aggregation",
        "no mutual TLS",
        "an aggregator the site does not list",
        "minBinCount 1",
        "minSiteRows 2",
    ],
)
def test_a_job_asking_less_than_the_default_policy_is_refused_naming_field_and_value(
    change: dict[str, Any], field: str, setting: str
) -> None:
    message = refusal(data_job(**change))
    assert f"{field}: " in message
    assert f"(Helm value {setting})" in message


def test_a_small_batch_needs_dp_and_dp_lifts_the_floor() -> None:
    relaxed = replace(SITE, policy=parse_site_policy({"privacy": {"required": False}}, "values"))
    job = data_job(privacy=None)
    job["spec"]["task"]["batchSize"] = 1
    message = refusal(job, relaxed)
    assert "spec.task.batchSize: 1 without record-level DP" in message
    assert "(Helm value site.policy.minBatchSizeWithoutDp)" in message
    with_dp = data_job()
    with_dp["spec"]["task"]["batchSize"] = 1
    assert plan(with_dp, observed(), SITE).status.phase != "Failed"


def test_the_data_volume_serves_only_the_namespaces_the_admin_named() -> None:
    message = refusal(data_job(), replace(SITE, data_namespaces=("research-*",)))
    assert "spec.sites[0].data.file: site 'hospital-a' would read this site's data volume " in (
        message
    )
    assert "from namespace 'hospitals'" in message and "(allowed: research-*)" in message
    assert "(Helm value site.data.namespaces)" in message
    # Offering data without naming who may use it offers it to nobody yet.
    assert "allowed: none yet" in refusal(data_job(), replace(SITE, data_namespaces=()))
    assert plan(data_job(), observed(), replace(SITE, data_namespaces=("hosp*",))).create


def test_an_aggregator_the_site_lists_is_allowed_and_in_cluster_can_be_refused() -> None:
    trusting = replace(
        SITE,
        policy=parse_site_policy({"aggregators": {"endpoints": ["*.consortium.org:443"]}}, "v"),
    )
    remote = data_job(aggregator={"endpoint": "agg.consortium.org:443"})
    assert plan(remote, observed(), trusting).status.phase != "Failed"
    outside = replace(
        trusting, policy=parse_site_policy({"aggregators": {"inCluster": False}}, "values")
    )
    message = refusal(data_job(), outside)
    assert "spec.aggregator.endpoint: " in message
    assert "(Helm value site.policy.aggregators.inCluster)" in message


def test_a_dataset_the_admin_exempts_needs_no_dp_but_every_other_promise() -> None:
    exempting = parse_site_policy(
        {"privacy": {"exemptDatasets": [{"path": "*.csv", "reason": "synthetic rows"}]}}, "values"
    )
    site = replace(SITE, policy=exempting)
    assert plan(data_job(privacy=None), observed(), site).status.phase != "Failed"
    message = refusal(data_job(privacy=None, security={"secureAggregation": {}}), site)
    assert "spec.security.mutualTls" in message and "recordLevel" not in message
    # One site's file that is not exempt: the job needs DP again.
    partly = data_job(privacy=None)
    partly["spec"]["sites"][2]["data"]["file"]["path"] = "hospital-c.parquet"
    assert "spec.privacy.recordLevel: " in refusal(partly, site)


def test_jobs_on_built_in_datasets_read_nothing_of_the_site_and_are_not_bound() -> None:
    # The breast-cancer example: sklearn sources, no DP, no secure aggregation, no TLS.
    assert plan(resource(), observed(), SITE).status.phase != "Failed"


def test_a_finished_job_keeps_its_outcome_when_the_policy_tightens() -> None:
    r = data_job(privacy=None)
    r["status"] = {"phase": "Succeeded", "conditions": []}
    relaxed = replace(SITE, policy=parse_site_policy({"privacy": {"required": False}}, "v"))
    assert plan(r, observed(), relaxed).status.phase == "Succeeded"
    p = plan(r, observed(), SITE)
    assert p.status.phase == "Succeeded" and p.create == []


def test_a_running_job_the_site_now_refuses_stops_its_pods() -> None:
    r = data_job(privacy=None)
    r["status"] = {"phase": "Running", "conditions": []}
    running = {trainer_name("breast-cancer", "hospital-a"): pod("Running")}
    p = plan(r, observed(running), SITE)
    assert p.status.phase == "Failed"
    assert p.delete_pods == [trainer_name("breast-cancer", "hospital-a")]


def test_each_trainer_is_pinned_to_the_terms_the_site_admitted() -> None:
    r = data_job()
    p = plan(r, observed(), SITE)
    trainer = next(
        o for o in p.create if o["metadata"]["name"] == trainer_name("breast-cancer", "hospital-a")
    )
    command = trainer["spec"]["containers"][0]["command"]
    assert command[command.index("--terms-sha256") + 1] == terms_digest(parse_job(r))


def test_the_terms_digest_follows_the_learning_terms_only() -> None:
    base = parse_job(data_job())
    spelled = data_job()
    spelled["spec"]["statistics"] = {"minBinCount": 5}  # the default, written out
    assert terms_digest(parse_job(spelled)) == terms_digest(base)
    operational = data_job(suspend=True, backoffLimit=7, podCleanup="all")
    operational["spec"]["pods"] = {"trainer": {"resources": {"limits": {"memory": "2Gi"}}}}
    assert terms_digest(parse_job(operational)) == terms_digest(base)
    for change in ({"rounds": 99}, {"privacy": None}, {"aggregator": {"endpoint": "x.org:1"}}):
        assert terms_digest(parse_job(data_job(**change))) != terms_digest(base), change


def test_the_default_policy_is_the_safe_one() -> None:
    policy = SitePolicy()
    assert policy.privacy.required and policy.secure_aggregation.required
    assert policy.mutual_tls.required and policy.aggregators.endpoints == []
    assert policy.approval == "required"
    assert OperatorSettings().policy == policy and OperatorSettings().data_namespaces == ()


def test_trainers_that_read_the_data_check_their_ca_against_the_sites_pins() -> None:
    pin = "ab" * 32
    pinned = replace(
        SITE,
        policy=parse_site_policy(
            {"approval": "policy", "mutualTls": {"trustedCaSha256": [pin]}}, "v"
        ),
    )
    p = plan(data_job(), observed(), pinned)
    reading = [o for o in p.create if o["kind"] == "Pod" and "-trainer-" in o["metadata"]["name"]]
    assert len(reading) == 5
    for o in reading:
        command = o["spec"]["containers"][0]["command"]
        assert command[command.index("--trusted-ca-sha256") + 1] == pin
    # A job on built-in data reads nothing of the site's: no pin to check.
    plain = plan(resource(), observed(), pinned)
    trainers = [
        o for o in plain.create if o["kind"] == "Pod" and "-trainer-" in o["metadata"]["name"]
    ]
    assert trainers and all(
        "--trusted-ca-sha256" not in o["spec"]["containers"][0]["command"] for o in trainers
    )
