"""The operator's decisions, as pure functions, without a cluster."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import yaml
from fedkube.errors import SpecError
from fedkube.spec import parse_job
from fedkube.spec.progress import Progress
from fedkube_operator.desired import aggregator_name, desired, trainer_name
from fedkube_operator.plan import plan
from fedkube_operator.plan_model import Observed
from fedkube_operator.progress import progress_url
from fedkube_operator.settings import OperatorSettings

from tests.kube_harness.controlplane import ROOT

SETTINGS = OperatorSettings(image="fedkube/trainer:test")
NOW = "2026-11-28T00:00:00Z"


def resource(**spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "breast-cancer.yaml").read_text())
    doc["spec"].update(spec)
    doc["metadata"].update(namespace="hospitals", uid="u-1", generation=3)
    return doc


def observed(
    pods: dict[str, Any] | None = None, progress: dict[str, Any] | None = None, **kw: Any
) -> Observed:
    return Observed(
        pods=pods or {},
        has_service=kw.get("svc", False),
        has_config_map=kw.get("cm", False),
        progress=progress,
        now=NOW,
    )


def pod(phase: str, code: int | None = None, message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if code is not None:
        status["containerStatuses"] = [
            {"state": {"terminated": {"exitCode": code, "message": message}}}
        ]
    return {"status": status}


def all_pods(phase: str = "Running") -> dict[str, Any]:
    names = [aggregator_name("breast-cancer")] + [
        trainer_name("breast-cancer", f"hospital-{c}") for c in "abcde"
    ]
    return {n: pod(phase) for n in names}


def test_first_reconcile_creates_everything_once_with_owner_references() -> None:
    p = plan(resource(), observed(), SETTINGS)
    kinds = sorted(o["kind"] for o in p.create)
    assert kinds == [
        "ConfigMap",
        "PersistentVolumeClaim",
        *["Pod"] * 6,
        "Service",
    ]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in p.create)
    names = [(o["kind"], o["metadata"]["name"]) for o in p.create]
    assert len(set(names)) == len(names)
    seen = replace(observed(all_pods("Pending"), svc=True, cm=True), has_claim=True)
    again = plan(resource(), seen, SETTINGS)
    assert again.create == [] and again.delete_pods == []


def test_pods_are_hardened_and_the_trainer_dials_the_service() -> None:
    want = desired(resource(), parse_job(resource()), SETTINGS)
    trainer = want.pods[trainer_name("breast-cancer", "hospital-a")]["spec"]
    c = trainer["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    command = c["command"]
    assert (
        command[command.index("--aggregator") + 1] == "breast-cancer-aggregator.hospitals.svc:7070"
    )
    assert command[-1] == "--allow-plaintext", "in-cluster clear text is asked for, not implied"
    assert trainer["restartPolicy"] == "Never"


def test_pods_meet_the_restricted_pod_security_standard_with_the_sites_ids() -> None:
    want = desired(resource(), parse_job(resource()), SETTINGS)
    for pod in want.pods.values():
        spec = pod["spec"]
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
        }
        c = spec["containers"][0]["securityContext"]
        assert c["allowPrivilegeEscalation"] is False and c["capabilities"] == {"drop": ["ALL"]}
    # OpenShift assigns ids from the namespace's range: the site leaves them out.
    platform = replace(SETTINGS, run_as_user=None, run_as_group=None, fs_group=None)
    for pod in desired(resource(), parse_job(resource()), platform).pods.values():
        assert pod["spec"]["securityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }


def test_failed_pod_is_recreated_until_the_backoff_limit() -> None:
    name = trainer_name("breast-cancer", "hospital-b")
    pods = all_pods()
    pods[name] = pod("Failed", 137)
    res = resource(backoffLimit=1)
    p = plan(res, observed(pods, svc=True, cm=True), SETTINGS)
    assert p.delete_pods == [name] and p.status.phase != "Failed"
    assert next(s for s in p.status.sites if s.name == "hospital-b").restarts == 1
    res["status"] = p.status.model_dump(by_alias=True, mode="json")
    p2 = plan(res, observed(pods, svc=True, cm=True), SETTINGS)
    assert p2.status.phase == "Failed"
    assert (
        next(c for c in p2.status.conditions if c.type == "Failed").reason == "BackoffLimitExceeded"
    )
    assert sorted(p2.delete_pods) == sorted(n for n in pods if n != name), "running pods stop"


def test_bad_input_fails_at_once() -> None:
    pods = all_pods()
    pods[aggregator_name("breast-cancer")] = pod(
        "Failed", 2, "error: spec.task.model.importPath: cannot import"
    )
    p = plan(resource(), observed(pods, svc=True, cm=True), SETTINGS)
    assert p.status.phase == "Failed" and p.status.aggregator_restarts == 0
    assert "importPath" in p.status.message


def test_progress_becomes_status_and_success_is_final() -> None:
    round_20 = {"round": 20, "sites": ["a", "b", "c"], "samples": 455, "openedAt": 1.0}
    progress = Progress.model_validate(
        {
            "job": "breast-cancer",
            "phase": "Succeeded",
            "round": 20,
            "totalRounds": 20,
            "global": {"round": 20, "loss": 0.12, "accuracy": 0.9649},
            "history": [{**round_20, "closedAt": 1.5, "durationSeconds": 0.5}],
            "sites": {
                "hospital-a": {"lastRound": 20, "samples": 13, "accuracy": 1.0, "loss": 0.01}
            },
            "modelPath": "/var/lib/fedkube/output/model.safetensors",
        }
    )
    p = plan(resource(), observed(all_pods(), progress, svc=True, cm=True), SETTINGS)
    s = p.status
    assert (s.phase, s.round, s.accuracy, s.sites_in_last_round) == ("Succeeded", 20, 0.9649, 3)
    assert s.observed_generation == 3 and s.completion_time == NOW
    # First seen already done (the operator was away): admitted, then completed.
    assert [e.reason for e in p.events] == ["Admitted", "Completed"]
    a = next(x for x in s.sites if x.name == "hospital-a")
    assert (a.last_round, a.samples, a.accuracy) == (20, 13, 1.0)


def test_suspend_deletes_pods_and_resume_recreates_them() -> None:
    res = resource(suspend=True)
    p = plan(res, observed(all_pods(), svc=True, cm=True), SETTINGS)
    assert p.status.phase == "Suspended" and len(p.delete_pods) == 6 and not p.create
    res = copy.deepcopy(res)
    res["spec"]["suspend"] = False
    res["status"] = p.status.model_dump(by_alias=True, mode="json")
    p2 = plan(res, observed(svc=True, cm=True), SETTINGS)
    assert len([o for o in p2.create if o["kind"] == "Pod"]) == 6
    assert "Resumed" in [e.reason for e in p2.events]


def test_external_aggregator_runs_only_local_trainers() -> None:
    res = resource(aggregator={"endpoint": "aggregator.consortium.example:7070"})
    res["spec"]["security"] = {"mutualTls": {}}  # required across organisations
    res["spec"]["sites"][1]["remote"] = True
    res["spec"]["sites"][1].pop("data")
    p = plan(res, observed(), SETTINGS)
    pods = [o for o in p.create if o["kind"] == "Pod"]
    assert len(pods) == 4 and not [o for o in p.create if o["kind"] == "Service"]
    for o in pods:
        command = o["spec"]["containers"][0]["command"]
        assert command[command.index("--aggregator") + 1] == "aggregator.consortium.example:7070"
        assert "--allow-plaintext" not in command and "--tls-dir" in command
        # Each trainer relays the job's progress, asked over its own (mutual TLS) channel.
        assert command[command.index("--progress-port") + 1] == "9092"
        assert o["spec"]["containers"][0]["ports"] == [{"name": "progress", "containerPort": 9092}]
    # The operator reads that relay, on a running trainer, never the remote aggregator.
    job = parse_job(res)
    running = {
        o["metadata"]["name"]: {**o, "status": {"phase": "Running", "podIP": "10.0.0.7"}}
        for o in pods
    }
    assert progress_url(job, running, SETTINGS) == "http://10.0.0.7:9092/progress"
    assert progress_url(job, {}, SETTINGS) is None
    local = resource()
    assert "--progress-port" not in next(
        o for o in plan(local, observed(), SETTINGS).create if o["kind"] == "Pod"
        and o["metadata"]["labels"]["fedkube.io/role"] == "trainer"
    )["spec"]["containers"][0]["command"]  # fmt: skip


def file_resource(path: str) -> dict[str, Any]:
    r = resource()
    r["spec"]["task"].update(numFeatures=30, numClasses=2)
    for i, site in enumerate(r["spec"]["sites"]):
        name = path if i == 0 else f"{site['name']}.csv"
        site["data"] = {"file": {"path": name, "labelColumn": "diagnosis"}, "standardize": "site"}
    return r


def test_trainers_read_the_sites_data_volume_read_only() -> None:
    site = replace(SETTINGS, data_claim="ward-data")
    want = desired(file_resource("a.csv"), parse_job(file_resource("a.csv")), site)
    for name, pod in want.pods.items():
        spec = pod["spec"]
        claims = [v for v in spec["volumes"] if v["name"] == "site-data"]
        if name == aggregator_name("breast-cancer"):
            assert claims == []  # the aggregator never sees a site's data
            continue
        assert claims == [
            {
                "name": "site-data",
                "persistentVolumeClaim": {"claimName": "ward-data", "readOnly": True},
            }
        ]
        c = spec["containers"][0]
        assert {"name": "site-data", "mountPath": "/data", "readOnly": True} in c["volumeMounts"]
        assert c["command"][c["command"].index("--data-dir") + 1] == "/data"


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        (SETTINGS, "a.csv", "spec.sites[0].data.file: site 'hospital-a' reads its own file, but"),
        (
            replace(SETTINGS, data_claim="ward-data"),
            "../other-ward/a.csv",
            "spec.sites[0].data.file.path: '../other-ward/a.csv' leads outside",
        ),
        (
            replace(SETTINGS, data_host_path="/srv/ward"),
            "/etc/secrets/a.csv",
            "spec.sites[0].data.file.path: '/etc/secrets/a.csv' leads outside",
        ),
    ],
    ids=["no data volume", "parent folder", "absolute path"],
)
def test_a_job_reaching_past_the_sites_data_is_refused_before_any_pod(
    settings: OperatorSettings, path: str, message: str
) -> None:
    p = plan(file_resource(path), observed(), settings)
    assert p.create == []
    assert p.status.phase == "Failed"
    condition = next(c for c in p.status.conditions if c.type == "SpecValid")
    assert condition.status == "False" and condition.reason == "RefusedBySite"
    assert message in condition.message


def test_trainers_keep_their_state_on_the_sites_claim_and_take_its_epsilon_cap() -> None:
    site = replace(SETTINGS, state_claim="ledgers", epsilon_cap=4.5)
    want = desired(resource(), parse_job(resource()), site)
    pod = want.pods[trainer_name("breast-cancer", "hospital-a")]["spec"]
    assert {"name": "site-state", "persistentVolumeClaim": {"claimName": "ledgers"}} in pod[
        "volumes"
    ]
    c = pod["containers"][0]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "site-state")
    # One folder per namespace, job and site: jobs never share a ledger file.
    assert mount["subPath"] == "hospitals/breast-cancer/hospital-a"
    command = c["command"]
    assert command[command.index("--state-dir") + 1] == mount["mountPath"]
    assert command[command.index("--epsilon-cap") + 1] == "4.5"
    aggregator = want.pods[aggregator_name("breast-cancer")]["spec"]
    assert all(v["name"] != "site-state" for v in aggregator["volumes"])


def test_trainers_reading_site_data_share_one_ledger_per_dataset_across_jobs() -> None:
    """Beside each job's own folder, every trainer that reads the site's data volume mounts
    the claim's datasets folder, and is told the volume and the job it counts for."""
    site = replace(SETTINGS, state_claim="ledgers", data_claim="hospital-data", epsilon_cap=5)
    want = desired(resource(), parse_job(resource()), site)
    c = want.pods[trainer_name("breast-cancer", "hospital-a")]["spec"]["containers"][0]
    mounts = [m for m in c["volumeMounts"] if m["name"] == "site-state"]
    assert sorted(m["subPath"] for m in mounts) == [
        "datasets",
        "hospitals/breast-cancer/hospital-a",
    ]
    command = c["command"]
    datasets = next(m for m in mounts if m["subPath"] == "datasets")
    assert command[command.index("--datasets-dir") + 1] == datasets["mountPath"]
    assert command[command.index("--dataset-volume") + 1] == "claim/hospital-data"
    assert command[command.index("--job-id") + 1] == "hospitals/breast-cancer"
    # No data offered: no dataset ledgers.
    plain = desired(resource(), parse_job(resource()), replace(site, data_claim=None))
    c = plain.pods[trainer_name("breast-cancer", "hospital-a")]["spec"]["containers"][0]
    assert "--datasets-dir" not in c["command"]


def test_a_trainer_refusing_the_job_on_its_datasets_budget_fails_it_at_once() -> None:
    name = trainer_name("breast-cancer", "hospital-b")
    pods = all_pods()
    said = "error: the job plans epsilon 3 on dataset 'b.csv' ... (Helm value site.epsilonCap)"
    pods[name] = pod("Failed", 3, said)
    p = plan(resource(backoffLimit=5), observed(pods, svc=True, cm=True), SETTINGS)
    assert p.status.phase == "Failed"
    condition = next(c for c in p.status.conditions if c.type == "SpecValid")
    assert condition.status == "False" and condition.reason == "RefusedBySite"
    assert "site hospital-b refused the job" in condition.message and said in condition.message
    # Not retried: the running pods go with the failure; the refusing one stays for its log.
    assert set(p.delete_pods) == {n for n in pods if n != name}


def test_the_model_lives_on_the_jobs_own_claim_which_pod_cleanup_never_deletes() -> None:
    p = plan(resource(), observed(), SETTINGS)
    claim = next(o for o in p.create if o["kind"] == "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "breast-cancer-output"
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "u-1"  # it goes with the job
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    aggregator = next(
        o
        for o in p.create
        if o["kind"] == "Pod" and o["metadata"]["name"] == aggregator_name("breast-cancer")
    )
    state = next(v for v in aggregator["spec"]["volumes"] if v["name"] == "state")
    assert state == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    assert p.status.model_volume == "breast-cancer-output"
    # A job that names its own claim gets none made, and its status names that one.
    named = resource(checkpoint={"claimName": "ward-models"})
    p = plan(named, observed(), replace(SETTINGS, allowed_claims=("ward-*",)))
    assert all(o["kind"] != "PersistentVolumeClaim" for o in p.create)
    assert p.status.model_volume == "ward-models"
    # When the job has succeeded, pod clean-up deletes pods only.
    done = resource()
    done["status"] = {"phase": "Succeeded"}
    finished = plan(done, replace(observed(all_pods("Succeeded")), has_claim=True), SETTINGS)
    assert finished.delete_pods and all("output" not in n for n in finished.delete_pods)


def test_the_aggregator_is_exposed_only_as_the_site_allows() -> None:
    asked = {"service": {"type": "NodePort", "nodePort": 31070}}
    job = resource(aggregator={"port": 7070, **asked})
    refused = plan(job, observed(), SETTINGS)
    assert refused.create == [] and refused.status.phase == "Failed"
    condition = next(c for c in refused.status.conditions if c.type == "SpecValid")
    assert condition.reason == "RefusedBySite"
    assert condition.message.startswith("spec.aggregator.service.type: NodePort would let")
    allowing = replace(SETTINGS, aggregator_service_types=("ClusterIP", "NodePort"))
    service = next(o for o in plan(job, observed(), allowing).create if o["kind"] == "Service")
    assert service["spec"]["type"] == "NodePort"
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc == {"name": "grpc", "port": 7070, "targetPort": "grpc", "nodePort": 31070}
    balanced = resource(
        aggregator={
            "service": {
                "type": "LoadBalancer",
                "annotations": {"example.com/internal": "false"},
                "loadBalancerSourceRanges": ["203.0.113.0/24"],
            }
        }
    )
    lb = replace(SETTINGS, aggregator_service_types=("LoadBalancer",))
    service = next(o for o in plan(balanced, observed(), lb).create if o["kind"] == "Service")
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert service["metadata"]["annotations"] == {"example.com/internal": "false"}
    with pytest.raises(SpecError, match="nodePort is for type NodePort, not ClusterIP"):
        parse_job(resource(aggregator={"service": {"nodePort": 31070}}))


def test_a_job_asks_resources_gpus_and_placement_for_its_pods_within_what_the_site_offers() -> None:
    asked = {
        "trainer": {
            "gpus": 1,
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"memory": "2Gi", "ephemeral-storage": "1Gi"},
            },
            "nodeSelector": {"accelerator": "h100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
        "aggregator": {"resources": {"requests": {"cpu": "1", "memory": "512Mi"}}},
    }
    job = resource(pods=asked)
    refused = plan(job, observed(), SETTINGS)  # the site offers no GPU by default
    assert refused.create == [] and refused.status.phase == "Failed"
    condition = next(c for c in refused.status.conditions if c.type == "SpecValid")
    assert condition.reason == "RefusedBySite"
    assert condition.message.startswith("spec.pods.trainer.gpus: the job asks 1 GPU(s)")

    gpu_site = replace(SETTINGS, max_gpus=2, gpu_resource="example.com/gpu")
    want = desired(job, parse_job(job), gpu_site)
    trainer = want.pods[trainer_name("breast-cancer", "hospital-a")]["spec"]
    assert trainer["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi", "ephemeral-storage": "1Gi", "example.com/gpu": 1},
    }
    assert trainer["nodeSelector"] == {"accelerator": "h100"}
    assert trainer["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "imagePullSecrets" not in trainer
    pulling = replace(gpu_site, image_pull_secrets=("regcred",), image_pull_policy="Always")
    for p in desired(job, parse_job(job), pulling).pods.values():
        assert p["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
        assert p["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    aggregator = want.pods[aggregator_name("breast-cancer")]["spec"]
    assert aggregator["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "512Mi"}}
    assert "nodeSelector" not in aggregator and "tolerations" not in aggregator
    # What a job asks never adds a volume: the pods' volumes are the site's alone.
    plain = desired(resource(), parse_job(resource()), gpu_site)
    for name, p in want.pods.items():
        assert p["spec"]["volumes"] == plain.pods[name]["spec"]["volumes"]


@pytest.mark.parametrize(
    ("pods", "message"),
    [
        ({"aggregator": {"gpus": 1}}, "pods.aggregator.gpus: the aggregator trains nothing"),
        ({"trainer": {"resources": {"limits": {"memory": "lots"}}}}, "pods.trainer.resources"),
        ({"trainer": {"volumes": [{"hostPath": "/"}]}}, "pods.trainer.volumes"),
    ],
    ids=["gpu for the aggregator", "bad quantity", "a volume"],
)
def test_what_a_job_may_not_ask_of_its_pods_fails_validation(
    pods: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_job(resource(pods=pods))


def test_a_cluster_with_a_site_name_trains_only_that_site() -> None:
    mine = replace(SETTINGS, site="hospital-c")
    refused = plan(resource(), observed(), mine)
    assert refused.create == [] and refused.status.phase == "Failed"
    condition = next(c for c in refused.status.conditions if c.type == "SpecValid")
    assert condition.reason == "RefusedBySite"
    assert condition.message.startswith(
        "spec.sites[0].remote: this cluster is site 'hospital-c' (Helm value site.name)"
    )
    doc = resource()
    for site in doc["spec"]["sites"]:
        if site["name"] != "hospital-c":
            site.update(remote=True)
            site.pop("data", None)
    doc["spec"]["minSitesPerRound"] = 1
    doc["spec"]["security"] = {"mutualTls": {}}  # remote sites cross organisations
    pods = desired(doc, parse_job(doc), mine).pods
    assert set(pods) == {
        aggregator_name("breast-cancer"),
        trainer_name("breast-cancer", "hospital-c"),
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"checkpoint": {"claimName": "payroll"}}, "spec.checkpoint.claimName: 'payroll'"),
        (
            {"security": {"mutualTls": {"aggregatorSecretName": "db-password"}}},
            "spec.security.mutualTls.aggregatorSecretName: 'db-password'",
        ),
        (
            {"security": {"mutualTls": {"siteSecretNames": {"hospital-b": "other-tls"}}}},
            "spec.security.mutualTls.siteSecretNames.hospital-b: 'other-tls'",
        ),
    ],
    ids=["claim", "aggregator secret", "site secret"],
)
def test_a_job_naming_a_claim_or_secret_the_site_did_not_offer_is_refused(
    spec: dict[str, Any], field: str
) -> None:
    refused = plan(resource(**spec), observed(), SETTINGS)
    assert refused.create == [] and refused.status.phase == "Failed"
    condition = next(c for c in refused.status.conditions if c.type == "SpecValid")
    assert condition.reason == "RefusedBySite" and condition.message.startswith(field)
    offering = replace(SETTINGS, allowed_claims=("payroll",), allowed_secrets=("*-tls", "db-*"))
    assert plan(resource(**spec), observed(), offering).status.phase != "Failed"


def test_network_policies_let_trainers_reach_only_the_aggregator() -> None:
    assert all(o["kind"] != "NetworkPolicy" for o in plan(resource(), observed(), SETTINGS).create)
    site = replace(
        SETTINGS,
        network_policy=True,
        operator_namespace="fedkube-system",
        aggregator_ingress_cidrs=("203.0.113.0/24",),
        scrape_namespaces=("monitoring",),
    )
    created = plan(resource(aggregator={"port": 7070, "httpPort": 9090}), observed(), site).create
    policies = {o["metadata"]["name"]: o for o in created if o["kind"] == "NetworkPolicy"}
    assert set(policies) == {"breast-cancer-trainers", "breast-cancer-aggregator"}
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == "u-1" for p in policies.values())
    trainers = policies["breast-cancer-trainers"]["spec"]
    job = {"fedkube.io/job": "breast-cancer"}
    assert trainers["podSelector"]["matchLabels"] == {**job, "fedkube.io/role": "trainer"}
    assert trainers["ingress"] == []
    to_aggregator, dns = trainers["egress"]
    assert to_aggregator == {
        "to": [{"podSelector": {"matchLabels": {**job, "fedkube.io/role": "aggregator"}}}],
        "ports": [{"protocol": "TCP", "port": 7070}],
    }
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    aggregator = policies["breast-cancer-aggregator"]["spec"]
    grpc, http = aggregator["ingress"]
    assert grpc["from"] == [
        {"podSelector": {"matchLabels": {**job, "fedkube.io/role": "trainer"}}},
        {"ipBlock": {"cidr": "203.0.113.0/24"}},
    ]
    assert grpc["ports"] == [{"protocol": "TCP", "port": 7070}]
    assert http["ports"] == [{"protocol": "TCP", "port": 9090}]
    assert [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for f in http["from"]] == ["fedkube-system", "monitoring"]  # fmt: skip
    # Once they exist, nothing is made again.
    again = plan(resource(), replace(observed(), has_network_policies=True), site).create
    assert all(o["kind"] != "NetworkPolicy" for o in again)
    # A job whose aggregator is at another organisation: its trainers dial that port only.
    remote = resource(aggregator={"endpoint": "agg.hospital-a.example.org:30707"},
                      security={"mutualTls": {}})  # fmt: skip
    made = [o for o in plan(remote, observed(), site).create if o["kind"] == "NetworkPolicy"]
    assert [o["metadata"]["name"] for o in made] == ["breast-cancer-trainers"]
    assert made[0]["spec"]["ingress"] == [  # only the operator, for the progress relay
        {
            "from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "fedkube-system"}}}],
            "ports": [{"protocol": "TCP", "port": 9092}],
        }
    ]  # fmt: skip
    assert made[0]["spec"]["egress"][0] == {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
        "ports": [{"protocol": "TCP", "port": 30707}],
    }
