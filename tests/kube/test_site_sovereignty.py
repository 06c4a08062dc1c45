"""The site decides, against a tenant: a real API server, the node agent, and an operator
under the site's default policy. The tenant is impersonated with a Role that allows only
FederatedJobs, Secrets and ConfigMaps in its own namespaces, as in a hospital's cluster where
research groups may submit jobs and the site admin owns the data."""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedkube.spec.approval import approval_document
from fedkube.spec.load import parse_job
from fedkube.spec.terms import terms_digest
from fedkube_operator.site_placement import site_config_name, site_trainer_name

from tests.kube_harness.jobs import get_job, wait_job
from tests.kube_harness.operator_env import STATE_CLAIM
from tests.kube_harness.tenant_site import (
    Site,
    approve,
    awaiting,
    compliant,
    no_pod_reached_the_data,
    refusal_message,
    running_trainers,
    secrets,
    strict_site_fixture,
    trail_entries,
    verified,
)
from tests.support.cli import fedkube_cli

site = strict_site_fixture("operator-strict")


def _without_dp(doc: dict[str, Any]) -> None:
    doc["spec"].pop("privacy")


def _weak_dp(doc: dict[str, Any]) -> None:
    doc["spec"]["privacy"]["recordLevel"]["noiseMultiplier"] = 0.3


def _own_aggregator(doc: dict[str, Any]) -> None:
    doc["spec"]["aggregator"]["endpoint"] = "collector.tenant.example:7070"


def _own_certificate(doc: dict[str, Any]) -> None:
    # The tenant's Secret, with a key and CA of its own, for the site that reads the data.
    doc["spec"]["security"]["mutualTls"] = {"siteSecretNames": {"clinic-a": "clinic-a-tls"}}


def _bin_of_one(doc: dict[str, Any]) -> None:
    doc["spec"]["statistics"] = {"minBinCount": 1}


def _batch_of_one_without_dp(doc: dict[str, Any]) -> None:
    _without_dp(doc)
    doc["spec"]["task"]["batchSize"] = 1


ATTACKS = {
    "no DP": (_without_dp, "spec.privacy.recordLevel", "site.policy.privacy.required"),
    "DP weaker than the policy": (
        _weak_dp,
        "spec.privacy.recordLevel.noiseMultiplier",
        "site.policy.privacy.minNoiseMultiplier",
    ),
    "an aggregator the site does not list": (
        _own_aggregator,
        "spec.aggregator.endpoint",
        "site.policy.aggregators.endpoints",
    ),
    "its own TLS Secret and CA": (
        _own_certificate,
        "spec.security.mutualTls.siteSecretNames.clinic-a",
        "site.tls.secretName",
    ),
    "minBinCount 1": (
        _bin_of_one,
        "spec.statistics.minBinCount",
        "site.policy.statistics.minBinCount",
    ),
    "batch size 1 without DP": (
        _batch_of_one_without_dp,
        "spec.task.batchSize",
        "site.policy.minBatchSizeWithoutDp",
    ),
}


def test_the_tenants_role_is_what_the_attacks_assume(site: Site) -> None:
    """The Role the attacks run under: jobs, Secrets and ConfigMaps; no pods or claims."""
    for verb, resource, expected in (
        ("create", "federatedjobs.fedkube.io", "yes"),
        ("create", "secrets", "yes"),
        ("create", "configmaps", "yes"),
        ("create", "pods", "no"),
        ("create", "persistentvolumeclaims", "no"),
        ("get", "pods", "no"),
    ):
        out = site.as_tenant("auth", "can-i", verb, resource, "-n", site.allowed, check=False)
        assert out.stdout.strip() == expected, (verb, resource, out.stdout, out.stderr)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_tenant_asking_less_than_the_policy_is_refused_before_any_pod(
    site: Site, attack: str
) -> None:
    weaken, field, value = ATTACKS[attack]
    name = "attack-" + uuid.uuid4().hex[:6]
    doc = compliant(site, site.allowed, name)
    weaken(doc)
    site.apply(site.allowed, doc)
    message = refusal_message(site, site.allowed, name)
    assert f"{field}: " in message and f"(Helm value {value})" in message, message
    no_pod_reached_the_data(site, site.allowed, name)


def test_a_namespace_the_site_did_not_name_never_reaches_its_data(site: Site) -> None:
    doc = compliant(site, site.elsewhere, "elsewhere")
    site.apply(site.elsewhere, doc)
    message = refusal_message(site, site.elsewhere, "elsewhere")
    assert f"from namespace '{site.elsewhere}'" in message
    assert "(Helm value site.data.namespaces)" in message
    no_pod_reached_the_data(site, site.elsewhere, "elsewhere")


def test_a_tenant_cannot_approve_a_job_itself(site: Site) -> None:
    doc = approval_document(site.allowed, "any", None, "0" * 64, "", None)
    out = site.as_tenant("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out.returncode != 0 and "forbidden" in out.stderr.lower(), out.stderr
    assert "siteapprovals" in out.stderr
    no_pod_reached_the_data(site, site.allowed, "any")


def test_an_approved_job_runs_and_a_config_map_the_tenant_made_is_rewritten(
    site: Site, tmp_path: Path
) -> None:
    """The tenant makes the job's ConfigMap first, with privacy and secure aggregation taken
    out, then applies a job that meets the policy. Nothing starts until the site admin
    approves the job's terms, read in words; then the operator writes the manifest as
    admitted over the tenant's (every trainer is pinned to those terms besides) and the job
    trains to the end under DP, secure aggregation and mutual TLS."""
    doc = compliant(site, site.allowed, "approved")
    doc["spec"]["podCleanup"] = "none"  # the trainers stay, to be looked at
    sites = [s["name"] for s in doc["spec"]["sites"]]
    secrets(site, "approved", sites, tmp_path)
    hostile = copy.deepcopy(doc)
    _without_dp(hostile)
    hostile["spec"]["security"].pop("secureAggregation")
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "approved-config", "namespace": site.allowed},
        "data": {"job.yaml": yaml.safe_dump(hostile)},
    }
    site.as_tenant("apply", "-f", "-", input=yaml.safe_dump(config))
    site.apply(site.allowed, doc)
    job = awaiting(site, "approved", "NoApproval")
    assert "fedkube approve -n " in job["status"]["message"]
    no_pod_reached_the_data(site, site.allowed, "approved")
    words = approve(site, "approved")
    for said in (
        "3 rounds of model logistic_regression",
        "site clinic-a: reads 'clinic-a.csv' (label 'diagnosis') from this site's data volume",
        f"aggregator: in this cluster, namespace {site.allowed}",
        "privacy: DP-SGD per record, noise multiplier 1, clip 1, delta 1e-05, epsilon at most",
        "secure aggregation: the aggregator sees only sums, 2 of 3 sites unmask them",
        "approved: SiteApproval " + f"{site.allowed}.approved",
    ):
        assert said in words, words
    listed = site.cp.kubectl("get", "siteapprovals").stdout.splitlines()
    [row] = [line for line in listed if line.startswith(f"{site.allowed}.approved ")]
    assert row.split()[1:3] == [site.allowed, "approved"], listed
    job = wait_job(
        site.cp,
        site.allowed,
        "approved",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=site.operator.log,
    )
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["round"] == 3
    # The trainers ran in the site's namespace with the site's certificate; the Secrets the
    # tenant made with its own CA (approved-<site>-tls) were never mounted.
    for s in sites:
        pod = json.loads(
            site.cp.kubectl(
                "get", "pod", site_trainer_name(site.allowed, "approved", s), "-n", site.home,
                "-o", "json",
            ).stdout
        )  # fmt: skip
        secrets_mounted = [
            v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v
        ]
        assert secrets_mounted == [f"fedkube-{s}-tls"], secrets_mounted
    assert site.pods(site.allowed, "fedkube.io/role=trainer") == []
    cm = json.loads(
        site.cp.kubectl(
            "get", "configmap", "approved-config", "-n", site.allowed, "-o", "json"
        ).stdout
    )
    # The manifest as admitted (the API server's defaults written out), not the tenant's.
    written = parse_job(yaml.safe_load(cm["data"]["job.yaml"]))
    assert terms_digest(written) == terms_digest(parse_job(doc))
    assert cm["metadata"]["ownerReferences"][0]["name"] == "approved"
    events = site.cp.kubectl("get", "events", "-n", site.allowed).stdout
    assert "ManifestRewritten" in events and "AwaitingSiteApproval" in events

    # The trails: the operator's decisions, and what each trainer sent, chained and intact.
    job_id = f"{site.allowed}/approved"
    decided = [e for e in trail_entries(site.trail) if e.get("job") == job_id]
    reasons = [e["reason"] for e in decided if e["kind"] == "decision"]
    for reason in ("Admitted", "AwaitingSiteApproval", "SiteApproved", "Completed"):
        assert reason in reasons, reasons
    made = {e["object"] for e in decided if e["kind"] == "created"}
    trainers = {f"Pod/{site_trainer_name(site.allowed, 'approved', s)}" for s in sites}
    assert trainers <= made
    assert f"ConfigMap/{site_config_name(site.allowed, 'approved')}" in made
    assert "ConfigMap/approved-config" in {e["object"] for e in decided if e["kind"] == "rewrote"}
    digest = terms_digest(parse_job(doc))
    for s in sites:
        path = site.claim(STATE_CLAIM) / site.allowed / "approved" / s
        sent = trail_entries(verified(path / "audit.jsonl"))
        assert sent[0]["kind"] == "trainer started" and sent[0]["terms_sha256"] == digest
        updates = [e for e in sent if e.get("message") == "masked update"]
        assert [e["round"] for e in updates] == [1, 2, 3], sent
        # The final evaluation: a secure round of counts only, after the last round.
        assert [e["round"] for e in sent if e.get("message") == "masked evaluation counts"] == [4]
        spent = [e["epsilon"] for e in updates]
        assert 0 < spent[0] < spent[1] < spent[2] <= 8.0, spent
        assert sent[-1]["kind"] == "trainer stopped" and sent[-1]["outcome"] == "the job succeeded"

    # Any change to the trail shows, naming the line: one edited, one dropped, two swapped.
    lines = verified(site.trail).read_text().splitlines()
    edited = json.loads(lines[2])
    edited["message"] = "nothing to see"
    for name, changed, line in (
        ("edited", [*lines[:2], json.dumps(edited), *lines[3:]], 3),
        ("dropped", [*lines[:2], *lines[3:]], 3),
        ("swapped", [*lines[:2], lines[3], lines[2], *lines[4:]], 3),
    ):
        copy_path = tmp_path / f"{name}.jsonl"
        copy_path.write_text("\n".join(changed) + "\n")
        out = fedkube_cli(["audit", "verify", str(copy_path)], timeout=60)
        assert out.returncode != 0, name
        assert f"{copy_path}:{line} (entry " in out.stderr, (name, out.stderr)


def test_a_job_deleted_while_the_operator_is_down_leaves_nothing_in_the_sites_namespace(
    site: Site,
) -> None:
    """Nothing in the site's namespace has an ownerReference to the job (none crosses
    namespaces): the operator deletes it with the job, or, when the job went without it
    (its finalizer cleared while it was down), its sweep does. The approved job's trainers
    (podCleanup none) are still there."""
    assert sorted(site.trainers("approved")) == ["clinic-a", "clinic-b", "clinic-c"]
    copy = site_config_name(site.allowed, "approved")
    assert site.cp.kubectl("get", "configmap", copy, "-n", site.home, check=False).returncode == 0
    site.operator.stop()
    site.as_tenant("delete", "fj", "approved", "-n", site.allowed, "--wait=false")
    # The operator's finalizer would hold the job until it came back; an admin clearing a
    # stuck job removes it, as here: the job is gone before the operator sees it go.
    site.cp.kubectl(
        "patch", "fj", "approved", "-n", site.allowed, "--type=merge",
        "-p", '{"metadata":{"finalizers":null}}',
    )  # fmt: skip
    site.operator.start()
    end = time.monotonic() + 30
    while time.monotonic() < end and site.trainers("approved"):
        time.sleep(0.5)
    assert site.trainers("approved") == {}
    gone = site.cp.kubectl("get", "configmap", copy, "-n", site.home, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout
    swept = [e for e in trail_entries(verified(site.trail)) if e["kind"] == "swept"]
    assert f"ConfigMap/{copy}" in {e["object"] for e in swept}, swept


def test_changed_terms_hold_training_and_a_withdrawn_approval_stops_it_within_10_s(
    site: Site, tmp_path: Path
) -> None:
    doc = compliant(site, site.allowed, "consent")
    # Two of three sites close a round, as a secure job that can lose a site asks. The edit
    # below stops the pods wherever the round is; when that is after sites revealed their
    # shares of the round, the aggregator's successor runs it again and they answer with the
    # release kept on the state claim, for the same survivors (``trainer.contribution``).
    doc["spec"].update(rounds=200, roundTimeoutSeconds=15, minSitesPerRound=2)
    sites = [s["name"] for s in doc["spec"]["sites"]]
    secrets(site, "consent", sites, tmp_path)
    site.apply(site.allowed, doc)
    awaiting(site, "consent", "NoApproval")
    approve(site, "consent")
    wait_job(
        site.cp, site.allowed, "consent", lambda s: s.get("round", 0) >= 2, log=site.operator.log
    )
    trainers = sorted(sites)
    assert running_trainers(site, "consent") == trainers
    # The aggregator's /progress (site names, sample counts, every round) answers the
    # operator's token only: not the tenant, not any other pod that reaches it.
    url = f"http://127.0.0.1:{doc['spec']['aggregator']['httpPort']}/progress"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 401

    # The job's terms change under its approval: the site's training is held.
    site.as_tenant(
        "patch",
        "fj",
        "consent",
        "-n",
        site.allowed,
        "--type=merge",
        "-p",
        '{"spec":{"rounds":150}}',
    )
    job = awaiting(site, "consent", "TermsChanged")
    assert {s["phase"] for s in job["status"]["sites"]} == {"Withdrawn"}
    end = time.monotonic() + 10
    while running_trainers(site, "consent") and time.monotonic() < end:
        time.sleep(0.2)
    assert running_trainers(site, "consent") == []
    held_at = get_job(site.cp, site.allowed, "consent")["status"].get("round", 0)

    # Approved again, for the new terms: the trainers come back, pinned to them, and train.
    assert "replacing SiteApproval" in approve(site, "consent")
    job = wait_job(
        site.cp,
        site.allowed,
        "consent",
        lambda s: s.get("round", 0) >= held_at + 2,
        timeout=180,
        log=site.operator.log,
    )
    assert running_trainers(site, "consent") == trainers

    # The site admin withdraws: every trainer that reads the data stops within 10 s.
    site.cp.kubectl("delete", "siteapproval", f"{site.allowed}.consent")
    withdrawn = time.monotonic()
    while running_trainers(site, "consent") and time.monotonic() < withdrawn + 10:
        time.sleep(0.2)
    took = time.monotonic() - withdrawn
    assert running_trainers(site, "consent") == [], f"trainers still there {took:.1f} s after"
    job = awaiting(site, "consent", "NoApproval")
    assert {s["phase"] for s in job["status"]["sites"]} == {"Withdrawn"}
    site.as_tenant("delete", "fj", "consent", "-n", site.allowed)
    # The site's copy of its manifest went with the job (no ownerReference crosses
    # namespaces: the operator deleted it).
    copy = site_config_name(site.allowed, "consent")
    gone = site.cp.kubectl("get", "configmap", copy, "-n", site.home, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout


def test_an_expired_approval_starts_nothing(site: Site) -> None:
    doc = compliant(site, site.allowed, "lapsed")
    site.apply(site.allowed, doc)
    awaiting(site, "lapsed", "NoApproval")
    approve(site, "lapsed", "--expires-at", "2026-01-01T00:00:00+00:00")
    job = awaiting(site, "lapsed", "ApprovalExpired")
    assert "expired at 2026-01-01T00:00:00+00:00" in next(
        c["message"] for c in job["status"]["conditions"] if c["type"] == "AwaitingSiteApproval"
    )
    no_pod_reached_the_data(site, site.allowed, "lapsed")


def test_the_sites_trail_holds_every_refusal_and_verifies(site: Site) -> None:
    """Run last: each attack above was refused, and the trail says so."""
    entries = trail_entries(verified(site.trail))
    refused = {
        e["job"]: e["message"]
        for e in entries
        if e["kind"] == "decision" and e["reason"] == "RefusedBySite"
    }
    attacks = [j for j in refused if j.startswith(f"{site.allowed}/attack-")]
    assert len(attacks) == len(ATTACKS), sorted(refused)
    assert "site.data.namespaces" in refused[f"{site.elsewhere}/elsewhere"]
    withdrawn = [
        e for e in entries if e.get("job") == f"{site.allowed}/consent" and e["kind"] == "deleted"
    ]
    assert len(withdrawn) >= 6  # three trainers, held once and withdrawn once
