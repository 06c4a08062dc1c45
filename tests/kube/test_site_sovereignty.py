"""The site decides, against a tenant: a real API server, the node agent, and an operator
under the site's default policy. The tenant is impersonated with a Role that allows only
FederatedJobs, Secrets and ConfigMaps in its own namespaces, as in a hospital's cluster where
research groups may submit jobs and the site admin owns the data."""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedkube.spec.approval import approval_document
from fedkube.spec.load import parse_job
from fedkube.spec.terms import terms_digest

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import get_job, wait_job, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import DATA_CLAIM, STATE_CLAIM, OperatorProcess
from tests.support.cli import fedkube_cli
from tests.support.site_files import file_job, write_site_files

TENANT = "researcher@hospital-a.example"
TENANT_RULES = [
    {"apiGroups": ["fedkube.io"], "resources": ["federatedjobs"], "verbs": ["*"]},
    {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["*"]},
]


@dataclass
class Site:
    cp: ControlPlane
    agent: NodeAgent
    operator: OperatorProcess
    allowed: str  # the namespace the site admin lets use its data
    elsewhere: str  # one it does not
    trail: Path  # the operator's audit trail (Helm site.audit)

    def as_tenant(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cp.kubectl("--as", TENANT, *args, input=input, check=check)

    def apply(self, namespace: str, doc: dict[str, Any]) -> None:
        self.as_tenant("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        out = self.cp.kubectl("get", "pods", "-n", namespace, "-o", "json")
        return list(json.loads(out.stdout)["items"])


def _tenant_namespace(cp: ControlPlane, name: str) -> None:
    cp.kubectl("create", "namespace", name)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "tenant", "namespace": name},
        "rules": TENANT_RULES,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "tenant", "namespace": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}],
    }
    for doc in (role, binding):
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def site(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    """The shared test site's operator makes way for one under the default policy (the
    chart's values unchanged), which offers its data to one namespace; then it comes back."""
    suffix = uuid.uuid4().hex[:6]
    allowed, elsewhere = f"ward-{suffix}", f"lab-{suffix}"
    for ns in (allowed, elsewhere):
        _tenant_namespace(control_plane, ns)
    operator.stop()
    folder = tmp_path_factory.mktemp("operator-strict")
    trail = folder / "audit" / "operator.jsonl"
    strict = OperatorProcess(
        control_plane,
        folder,
        ("--audit-log", str(trail)),
        policy={},
        data_namespaces=(allowed,),
        watch=(allowed, elsewhere),
    )
    try:
        yield Site(control_plane, node_agent, strict.start(), allowed, elsewhere, trail)
    finally:
        strict.stop()
        operator.start()
        for ns in (allowed, elsewhere):
            control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def compliant(site: Site, namespace: str, name: str) -> dict[str, Any]:
    """A job that promises what the default policy asks: DP-SGD within its bounds, secure
    aggregation, mutual TLS, the aggregator in this cluster, the default statistics floors."""
    files = write_site_files(site.agent.claim_dir(namespace, DATA_CLAIM))
    doc = file_job(
        {s: Path(p.name) for s, p in files.items()},
        name=name,
        rounds=3,
        privacy={"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0, "epsilonCap": 8.0}},
        security={"secureAggregation": {"threshold": 2}, "mutualTls": {}},
    )
    # Under secure aggregation the sites agree their text labels up front.
    doc["spec"]["task"]["labels"] = ["benign", "malignant"]
    return with_free_ports(doc)


def _without_dp(doc: dict[str, Any]) -> None:
    doc["spec"].pop("privacy")


def _weak_dp(doc: dict[str, Any]) -> None:
    doc["spec"]["privacy"]["recordLevel"]["noiseMultiplier"] = 0.3


def _own_aggregator(doc: dict[str, Any]) -> None:
    doc["spec"]["aggregator"]["endpoint"] = "collector.tenant.example:7070"


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


def _refused(site: Site, namespace: str, name: str) -> str:
    job = wait_job(
        site.cp, namespace, name, lambda s: s.get("phase") == "Failed", log=site.operator.log
    )
    condition = next(c for c in job["status"]["conditions"] if c["type"] == "SpecValid")
    assert condition["status"] == "False" and condition["reason"] == "RefusedBySite", condition
    return str(condition["message"])


def _no_pod_reached_the_data(site: Site, namespace: str) -> None:
    pods = site.pods(namespace)
    assert pods == [], [p["metadata"]["name"] for p in pods]


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
    message = _refused(site, site.allowed, name)
    assert f"{field}: " in message and f"(Helm value {value})" in message, message
    _no_pod_reached_the_data(site, site.allowed)


def test_a_namespace_the_site_did_not_name_never_reaches_its_data(site: Site) -> None:
    doc = compliant(site, site.elsewhere, "elsewhere")
    site.apply(site.elsewhere, doc)
    message = _refused(site, site.elsewhere, "elsewhere")
    assert f"from namespace '{site.elsewhere}'" in message
    assert "(Helm value site.data.namespaces)" in message
    _no_pod_reached_the_data(site, site.elsewhere)


def test_a_tenant_cannot_approve_a_job_itself(site: Site) -> None:
    doc = approval_document(site.allowed, "any", None, "0" * 64, "", None)
    out = site.as_tenant("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out.returncode != 0 and "forbidden" in out.stderr.lower(), out.stderr
    assert "siteapprovals" in out.stderr
    _no_pod_reached_the_data(site, site.allowed)


def _secrets(site: Site, job: str, sites: list[str], folder: Path) -> None:
    """The job's certificates, as the tenant can still give them (the site's own keys at
    the site are the next step of issue 24)."""
    from fedkube.security.certs import create_consortium

    create_consortium(folder, "hospitals", sites, ["127.0.0.1", "localhost"])
    folders = {f"{job}-aggregator-tls": folder / "aggregator"}
    folders.update({f"{job}-{s}-tls": folder / "sites" / s for s in sites})
    for secret, path in folders.items():
        site.as_tenant(
            "create", "secret", "generic", secret, "-n", site.allowed, f"--from-file={path}"
        )


def _approve(site: Site, job: str, *extra: str) -> str:
    """`fedkube approve`, as the site admin (the control plane's admin credentials)."""
    out = fedkube_cli(
        [
            "approve",
            "-n",
            site.allowed,
            job,
            "--yes",
            "--kubectl",
            str(site.cp.bin / "kubectl"),
            *extra,
        ],
        env={**os.environ, "KUBECONFIG": str(site.cp.kubeconfig)},
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _awaiting(site: Site, job: str, reason: str) -> dict[str, Any]:
    def held(status: dict[str, Any]) -> bool:
        c = [c for c in status.get("conditions", []) if c["type"] == "AwaitingSiteApproval"]
        return bool(c) and c[0]["status"] == "True" and c[0]["reason"] == reason

    return wait_job(site.cp, site.allowed, job, held, log=site.operator.log)


def _trainers(site: Site, job: str) -> list[str]:
    return sorted(
        p["metadata"]["name"]
        for p in site.pods(site.allowed)
        if p["metadata"]["name"].startswith(f"{job}-trainer-")
        and p["metadata"].get("deletionTimestamp") is None
    )


def test_an_approved_job_runs_and_a_config_map_the_tenant_made_is_rewritten(
    site: Site, tmp_path: Path
) -> None:
    """The tenant makes the job's ConfigMap first, with privacy and secure aggregation taken
    out, then applies a job that meets the policy. Nothing starts until the site admin
    approves the job's terms, read in words; then the operator writes the manifest as
    admitted over the tenant's (every trainer is pinned to those terms besides) and the job
    trains to the end under DP, secure aggregation and mutual TLS."""
    doc = compliant(site, site.allowed, "approved")
    sites = [s["name"] for s in doc["spec"]["sites"]]
    _secrets(site, "approved", sites, tmp_path)
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
    job = _awaiting(site, "approved", "NoApproval")
    assert "fedkube approve -n " in job["status"]["message"]
    _no_pod_reached_the_data(site, site.allowed)
    words = _approve(site, "approved")
    for said in (
        "3 rounds of model logistic_regression",
        "site clinic-a: reads 'clinic-a.csv' (label 'diagnosis') from this site's data volume",
        f"aggregator: in this cluster, namespace {site.allowed}",
        "privacy: DP-SGD per record, noise multiplier 1, clip 1, delta 1e-05, epsilon at most",
        "secure aggregation: the aggregator sees only sums, 2 of 3 sites unmask them",
        "approved: SiteApproval " + f"{site.allowed}.approved",
    ):
        assert said in words, words
    listed = site.cp.kubectl("get", "siteapprovals").stdout
    assert f"{site.allowed}.approved" in listed and "approved" in listed.split("\n")[1]
    job = wait_job(
        site.cp,
        site.allowed,
        "approved",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=site.operator.log,
    )
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["round"] == 3
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
    decided = [e for e in _entries(site.trail) if e.get("job") == job_id]
    reasons = [e["reason"] for e in decided if e["kind"] == "decision"]
    for reason in ("Admitted", "AwaitingSiteApproval", "SiteApproved", "Completed"):
        assert reason in reasons, reasons
    made = {e["object"] for e in decided if e["kind"] == "created"}
    assert {f"Pod/approved-trainer-{s}" for s in sites} <= made
    assert "ConfigMap/approved-config" in {e["object"] for e in decided if e["kind"] == "rewrote"}
    digest = terms_digest(parse_job(doc))
    for s in sites:
        path = site.agent.claim_dir(site.allowed, STATE_CLAIM) / site.allowed / "approved" / s
        sent = _entries(_verified(path / "audit.jsonl"))
        assert sent[0]["kind"] == "trainer started" and sent[0]["terms_sha256"] == digest
        updates = [e for e in sent if e.get("message") == "masked update"]
        assert [e["round"] for e in updates] == [1, 2, 3], sent
        # The final evaluation: a secure round of counts only, after the last round.
        assert [e["round"] for e in sent if e.get("message") == "masked evaluation counts"] == [4]
        spent = [e["epsilon"] for e in updates]
        assert 0 < spent[0] < spent[1] < spent[2] <= 8.0, spent
        assert sent[-1]["kind"] == "trainer stopped" and sent[-1]["outcome"] == "the job succeeded"

    # Any change to the trail shows, naming the line: one edited, one dropped, two swapped.
    lines = _verified(site.trail).read_text().splitlines()
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


def test_changed_terms_hold_training_and_a_withdrawn_approval_stops_it_within_10_s(
    site: Site, tmp_path: Path
) -> None:
    doc = compliant(site, site.allowed, "consent")
    doc["spec"].update(rounds=200, roundTimeoutSeconds=15)
    sites = [s["name"] for s in doc["spec"]["sites"]]
    _secrets(site, "consent", sites, tmp_path)
    site.apply(site.allowed, doc)
    _awaiting(site, "consent", "NoApproval")
    _approve(site, "consent")
    wait_job(
        site.cp, site.allowed, "consent", lambda s: s.get("round", 0) >= 2, log=site.operator.log
    )
    trainers = [f"consent-trainer-{s}" for s in sites]
    assert _trainers(site, "consent") == trainers

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
    job = _awaiting(site, "consent", "TermsChanged")
    assert {s["phase"] for s in job["status"]["sites"]} == {"Withdrawn"}
    end = time.monotonic() + 10
    while _trainers(site, "consent") and time.monotonic() < end:
        time.sleep(0.2)
    assert _trainers(site, "consent") == []
    held_at = get_job(site.cp, site.allowed, "consent")["status"].get("round", 0)

    # Approved again, for the new terms: the trainers come back, pinned to them, and train.
    assert "replacing SiteApproval" in _approve(site, "consent")
    job = wait_job(
        site.cp,
        site.allowed,
        "consent",
        lambda s: s.get("round", 0) >= held_at + 2,
        timeout=180,
        log=site.operator.log,
    )
    assert _trainers(site, "consent") == trainers

    # The site admin withdraws: every trainer that reads the data stops within 10 s.
    site.cp.kubectl("delete", "siteapproval", f"{site.allowed}.consent")
    withdrawn = time.monotonic()
    while _trainers(site, "consent") and time.monotonic() < withdrawn + 10:
        time.sleep(0.2)
    took = time.monotonic() - withdrawn
    assert _trainers(site, "consent") == [], f"trainers still there {took:.1f} s after"
    job = _awaiting(site, "consent", "NoApproval")
    assert {s["phase"] for s in job["status"]["sites"]} == {"Withdrawn"}
    site.as_tenant("delete", "fj", "consent", "-n", site.allowed)


def test_an_expired_approval_starts_nothing(site: Site) -> None:
    doc = compliant(site, site.allowed, "lapsed")
    site.apply(site.allowed, doc)
    _awaiting(site, "lapsed", "NoApproval")
    _approve(site, "lapsed", "--expires-at", "2026-01-01T00:00:00+00:00")
    job = _awaiting(site, "lapsed", "ApprovalExpired")
    assert "expired at 2026-01-01T00:00:00+00:00" in next(
        c["message"] for c in job["status"]["conditions"] if c["type"] == "AwaitingSiteApproval"
    )
    _no_pod_reached_the_data(site, site.allowed)


def test_the_sites_trail_holds_every_refusal_and_verifies(site: Site) -> None:
    """Run last: each attack above was refused, and the trail says so."""
    entries = _entries(_verified(site.trail))
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


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _verified(path: Path) -> Path:
    out = fedkube_cli(["audit", "verify", str(path)], timeout=60)
    assert out.returncode == 0 and "intact" in out.stdout, out.stdout + out.stderr
    return path
