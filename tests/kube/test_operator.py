"""The operator end to end: a real API server, the node agent running pods as processes, the
operator logged in as the chart's ServiceAccount."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fedkube.privacy.ledger import PrivacyLedger
from fedkube.trainer.site import LEDGER_FILE
from safetensors.numpy import load_file

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import (
    apply,
    example,
    get_job,
    model_after_the_pods,
    pods,
    result_file,
    wait_job,
    with_free_ports,
)
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import DATA_CLAIM, STATE_CLAIM, OperatorProcess
from tests.support.site_files import file_job, write_site_files


def test_breast_cancer_example_succeeds(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    doc = example()  # the example as it is: default ports, no volume
    apply(control_plane, namespace, doc)
    job = wait_job(
        control_plane,
        namespace,
        "breast-cancer",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=operator.log,
    )
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["round"] == status["totalRounds"] == 20
    result = result_file(node_agent.root, namespace, "breast-cancer")
    assert result["roundsCompleted"] == 20
    assert status["accuracy"] == pytest.approx(result["global"]["accuracy"], abs=1e-6)
    assert status["loss"] == pytest.approx(result["global"]["loss"], abs=1e-6)
    assert {s["name"] for s in status["sites"]} == {f"hospital-{c}" for c in "abcde"}
    assert all(s["lastRound"] == 20 and s["samples"] > 0 for s in status["sites"])
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "True" and conditions["Failed"]["status"] == "False"
    assert status["observedGeneration"] == job["metadata"]["generation"]
    assert status["startTime"] and status["completionTime"]

    table = control_plane.kubectl("get", "fj", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "PHASE", "ROUND", "ACCURACY", "AGE"]
    assert row.split()[:4] == [
        "breast-cancer",
        "Succeeded",
        "20",
        f"{status['accuracy']:g}"[: len(row.split()[3])],
    ]
    wide = control_plane.kubectl("get", "fj", "-n", namespace, "-o", "wide").stdout
    assert "STRATEGY" in wide and "fedavg" in wide

    events = json.loads(
        control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    )["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "breast-cancer"}
    assert {"Started", "Completed"} <= reasons, reasons

    # The pods go (podCleanup: succeeded); the model stays on the job's own claim, which the
    # status and `kubectl get fj -o wide` name.
    assert status["modelVolume"] == "breast-cancer-output"
    assert "MODEL" in wide and "breast-cancer-output" in wide
    claim = node_agent.claim_dir(namespace, "breast-cancer-output")
    model_after_the_pods(control_plane, namespace, "breast-cancer", claim, 20)


def test_operator_metrics_carry_round_and_accuracy(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, node_agent: NodeAgent
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    doc = with_free_ports(example("metered", rounds=5))
    apply(control_plane, namespace, doc)
    status = wait_job(
        control_plane,
        namespace,
        "metered",
        lambda s: s.get("phase") == "Succeeded",
        log=operator.log,
    )["status"]
    samples = {
        (
            s.name,
            s.labels.get("fedjob_namespace"),
            s.labels.get("fedjob"),
            s.labels.get("phase"),
        ): s.value
        for fam in text_string_to_metric_families(operator.metrics())
        for s in fam.samples
    }
    assert samples[("fedkube_rounds_completed", namespace, "metered", None)] == 5
    assert samples[("fedkube_global_accuracy", namespace, "metered", None)] == pytest.approx(
        status["accuracy"]
    )
    assert samples[("fedkube_job_phase", namespace, "metered", "Succeeded")] == 1
    assert samples[("fedkube_jobs", None, None, "Succeeded")] >= 1
    assert samples[("fedkube_reconcile_duration_seconds_count", None, None, None)] > 0


BAD = [
    ("missing sites", lambda d: d["spec"].pop("sites"), "spec.sites: Required value"),
    (
        "quorum above sites",
        lambda d: d["spec"].update(minSitesPerRound=9),
        "spec.minSitesPerRound: Invalid value: minSitesPerRound must not exceed the number of",
    ),
    (
        "node port on a ClusterIP service",
        lambda d: d["spec"].update(aggregator={"service": {"nodePort": 31070}}),
        "spec.aggregator.service.nodePort: Invalid value: nodePort is for type NodePort",
    ),
    (
        "sample below quorum",
        lambda d: d["spec"].update(minSitesPerRound=3, sitesPerRound=2),
        "spec.sitesPerRound: Invalid value: sitesPerRound must lie between minSitesPerRound and",
    ),
    (
        "duplicate site",
        lambda d: d["spec"]["sites"].append(dict(d["spec"]["sites"][0])),
        "spec.sites[5]: Duplicate value",
    ),
    (
        "negative learning rate",
        lambda d: d["spec"]["task"].update(learningRate=-0.1),
        "spec.task.learningRate: Invalid value: -0.1",
    ),
    (
        "unknown strategy",
        lambda d: d["spec"].update(strategy={"name": "fedmagic"}),
        'spec.strategy.name: Unsupported value: "fedmagic"',
    ),
    (
        "median under secure aggregation",
        lambda d: d["spec"].update(
            security={"secureAggregation": {}, "robustAggregation": {"method": "median"}}
        ),
        "spec.security.robustAggregation: Invalid value: robustAggregation needs every update "
        "in the clear, which secureAggregation hides from the aggregator; choose one",
    ),
    (
        "remote site without mutual TLS",
        lambda d: d["spec"]["sites"].__setitem__(1, {"name": "hospital-b", "remote": True}),
        "spec.security: Invalid value: security.mutualTls is required when a site is remote",
    ),
    (
        "secure aggregation threshold below a majority",
        lambda d: d["spec"].update(security={"secureAggregation": {"threshold": 2}}),
        "spec.security.secureAggregation.threshold: Invalid value: security.secureAggregation."
        "threshold must be above half the number of sites",
    ),
]


@pytest.mark.parametrize(("case", "break_it", "message"), BAD, ids=[b[0] for b in BAD])
def test_invalid_manifests_are_refused_by_the_api_server(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    case: str,
    break_it: Any,
    message: str,
) -> None:
    import yaml

    doc = example("refused")
    break_it(doc)
    out = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
    assert not get_job(control_plane, namespace, "refused")


def test_task_is_immutable_once_created(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    doc = with_free_ports(example("frozen", rounds=2, suspend=True))
    apply(control_plane, namespace, doc)
    doc["spec"]["task"]["learningRate"] = 0.5
    import yaml

    out = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert out.returncode != 0 and "task is immutable" in out.stderr


def aggregator_progress(doc: dict[str, Any], token: str) -> dict[str, Any] | None:
    """The aggregator's /progress, read as the operator reads it (with the job's token)."""
    import urllib.request

    try:
        url = f"http://127.0.0.1:{doc['spec']['aggregator']['httpPort']}/progress"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=1) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except OSError:
        return None


def wait_progress(
    doc: dict[str, Any], until: Any, operator: OperatorProcess, namespace: str, timeout: float = 120
) -> dict[str, Any]:
    import time

    end = time.monotonic() + timeout
    token = operator.progress_token(namespace, doc["metadata"]["name"])
    while time.monotonic() < end:
        p = aggregator_progress(doc, token)
        if p and until(p):
            return p
        time.sleep(0.05)
    raise AssertionError("the aggregator never got there")


def slow_job(name: str, rounds: int, **spec: Any) -> dict[str, Any]:
    doc = with_free_ports(example(name, rounds=rounds, **spec))
    doc["spec"]["task"]["localEpochs"] = 15
    doc["spec"]["checkpoint"] = {"claimName": f"{name}-state"}
    return doc


def test_aggregator_killed_mid_job_resumes_from_its_checkpoint(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    import os
    import signal

    doc = slow_job("phoenix", rounds=60)
    apply(control_plane, namespace, doc)
    wait_progress(doc, lambda p: p["round"] >= 5, operator, namespace)
    run = next(r for r in node_agent.runs.values() if r.name == "phoenix-aggregator")
    assert run.containers[0].proc is not None
    os.killpg(run.containers[0].proc.pid, signal.SIGKILL)
    status = wait_job(
        control_plane,
        namespace,
        "phoenix",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=operator.log,
    )["status"]
    assert status["phase"] == "Succeeded", status
    assert status["aggregatorRestarts"] == 1 and status["round"] == 60
    result = result_file(node_agent.root, namespace, "phoenix")
    assert [h["round"] for h in result["history"]] == list(range(1, 61)), "no round counted twice"
    assert "resumed from checkpoint after round" in node_agent.logs(namespace, "phoenix-aggregator")
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=phoenix"
    ).stdout
    assert "PodFailed" in events


def test_operator_restart_mid_job_creates_nothing_twice(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    doc = slow_job("steady", rounds=60)
    apply(control_plane, namespace, doc)
    wait_progress(doc, lambda p: p["round"] >= 3, operator, namespace)
    before = {n: p["metadata"]["uid"] for n, p in pods(control_plane, namespace, "steady").items()}
    assert len(before) == 6
    operator.kill()
    operator.start()
    status = wait_job(
        control_plane,
        namespace,
        "steady",
        lambda s: s.get("phase") == "Succeeded",
        log=operator.log,
    )["status"]
    after = pods(control_plane, namespace, "steady")
    assert {n: p["metadata"]["uid"] for n, p in after.items() if n in before} == {
        n: u for n, u in before.items() if n in after
    }, "the same pods, none recreated"
    assert len(after) <= 6
    assert status["round"] == 60 and status["aggregatorRestarts"] == 0
    assert all(s["restarts"] == 0 for s in status["sites"])


def test_deleting_a_running_job_removes_everything_it_created(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    import time

    doc = slow_job("doomed", rounds=5000)
    apply(control_plane, namespace, doc)
    wait_progress(doc, lambda p: p["round"] >= 1, operator, namespace)
    pids = [
        c.proc.pid
        for r in node_agent.runs.values()
        if r.namespace == namespace
        for c in r.containers
        if c.proc
    ]
    assert len(pids) == 6
    control_plane.kubectl("delete", "fj", "doomed", "-n", namespace)
    end = time.monotonic() + 90
    while time.monotonic() < end:
        left = control_plane.kubectl(
            "get",
            "pods,services,configmaps",
            "-n",
            namespace,
            "-l",
            "fedkube.io/job=doomed",
            "-o",
            "name",
        ).stdout.split()
        if not left:
            break
        time.sleep(0.5)
    assert not left, left
    for pid in pids:
        assert not _alive(pid), f"process {pid} still runs"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_suspend_removes_pods_and_resume_continues_from_the_checkpoint(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    doc = slow_job("napper", rounds=50)
    apply(control_plane, namespace, doc)
    wait_progress(doc, lambda p: p["round"] >= 3, operator, namespace)
    control_plane.kubectl(
        "patch", "fj", "napper", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    wait_job(
        control_plane,
        namespace,
        "napper",
        lambda s: s.get("phase") == "Suspended",
        log=operator.log,
    )
    import time

    end = time.monotonic() + 60
    while pods(control_plane, namespace, "napper") and time.monotonic() < end:
        time.sleep(0.3)
    assert not pods(control_plane, namespace, "napper")
    control_plane.kubectl(
        "patch", "fj", "napper", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    status = wait_job(
        control_plane,
        namespace,
        "napper",
        lambda s: s.get("phase") == "Succeeded",
        log=operator.log,
    )["status"]
    assert status["round"] == 50
    result = result_file(node_agent.root, namespace, "napper")
    assert [h["round"] for h in result["history"]] == list(range(1, 51))
    assert "resumed from checkpoint" in node_agent.logs(namespace, "napper-aggregator")


def test_a_model_that_cannot_be_imported_fails_the_job_with_the_reason(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    doc = with_free_ports(example("broken"))
    doc["spec"]["task"]["model"] = {"importPath": "hospital_models_missing:make_model"}
    apply(control_plane, namespace, doc)
    status = wait_job(
        control_plane, namespace, "broken", lambda s: s.get("phase") == "Failed", log=operator.log
    )["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "InvalidInput"
    assert (
        "spec.task.model.importPath: cannot import module 'hospital_models_missing'"
        in failed["message"]
    )
    assert status["aggregatorRestarts"] == 0, "bad input is not retried"


@pytest.mark.parametrize(
    ("path", "refusal"),
    [
        ("torch.hub:load", "torch.hub:load is refused: module 'torch.hub' loads code"),
        ("other_lab.models:net", "import path other_lab.models:net is not among this site's"),
    ],
    ids=["torch-hub", "not-allowed"],
)
def test_an_import_path_the_site_did_not_allow_fails_the_job(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    namespace: str,
    path: str,
    refusal: str,
) -> None:
    """The site allows hospital_models_* (its operator's --allow-import): a job cannot run
    other code in its pods, torch.hub's loader least of all."""
    name = "hub" if "hub" in path else "foreign"
    doc = with_free_ports(example(name))
    doc["spec"]["task"]["model"] = {
        "importPath": path,
        "params": {"repo_or_dir": "someone/models", "model": "net", "trust_repo": True},
    }
    apply(control_plane, namespace, doc)
    status = wait_job(
        control_plane, namespace, name, lambda s: s.get("phase") == "Failed", log=operator.log
    )["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidInput" and refusal in failed["message"], failed


def test_mutual_tls_from_secrets_and_secure_aggregation(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The consortium's certificates from `fedkube certs` become Secrets; the operator mounts
    them and runs the job over mutual TLS (no clear text), with secure aggregation on."""
    from fedkube.security.certs import create_consortium

    doc = with_free_ports(
        example(
            "tls",
            rounds=5,
            # Every site in every round (asserted below): under load a trainer pod can take
            # more than the default 30 s to start; the wait ends once all have joined.
            joinGraceSeconds=300,
            security={
                "mutualTls": {"siteSecretNames": {"hospital-a": "hospital-a-tls"}},
                "secureAggregation": {"threshold": 3},
            },
        )
    )
    sites = [s["name"] for s in doc["spec"]["sites"]]
    # Trainers here reach the aggregator on the host's loopback (the test node agent).
    create_consortium(tmp_path, "hospitals", sites, ["127.0.0.1", "localhost"])
    secrets = {"tls-aggregator-tls": tmp_path / "aggregator"}
    secrets.update({f"tls-{s}-tls": tmp_path / "sites" / s for s in sites[1:]})
    secrets["hospital-a-tls"] = tmp_path / "sites" / "hospital-a"
    for name, folder in secrets.items():
        control_plane.kubectl(
            "create", "secret", "generic", name, "-n", namespace, f"--from-file={folder}"
        )
    apply(control_plane, namespace, doc)
    job = wait_job(
        control_plane,
        namespace,
        "tls",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=operator.log,
    )
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["round"] == 5
    for name, pod in pods(control_plane, namespace, "tls").items():
        command = pod["spec"]["containers"][0]["command"]
        assert "--tls-dir" in command and "--allow-plaintext" not in command, name
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "tls"]
        want = "hospital-a-tls" if name.endswith("hospital-a") else None
        assert volume["secret"]["secretName"] == (want or name.replace("-trainer-", "-") + "-tls")
    result = result_file(node_agent.root, namespace, "tls")
    assert all(h["secureAggregation"]["revealedBy"] == 5 for h in result["history"])


def test_every_pod_of_a_job_meets_the_restricted_pod_security_standard(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    """The API server's PodSecurity admission, enforcing "restricted" on the namespace, lets
    the aggregator and every trainer in; a pod without a seccomp profile it refuses."""
    control_plane.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unhardened"},
        "spec": {"containers": [{"name": "c", "image": "fedkube/trainer:test"}]},
    }
    refused = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(bare), check=False
    )
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr
    doc = example("restricted", rounds=3, podCleanup="none")
    apply(control_plane, namespace, with_free_ports(doc))
    job = wait_job(
        control_plane,
        namespace,
        "restricted",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=operator.log,
    )
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert len(pods(control_plane, namespace, "restricted")) == 6  # the aggregator, 5 sites


def test_sites_files_on_the_sites_data_volume_train_a_job_and_a_path_past_it_is_refused(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    """The site admin offers a claim (the operator's --data-claim, Helm site.data): trainers
    mount it read-only at /data and read the job's relative data.file paths there. A job
    that names a path outside it fails before any pod, with a condition naming the field."""
    paths = write_site_files(node_agent.claim_dir(namespace, DATA_CLAIM))
    relative = {site: Path(path.name) for site, path in paths.items()}
    doc = with_free_ports(file_job(relative, name="clinics", rounds=5, podCleanup="none"))
    apply(control_plane, namespace, doc)
    job = wait_job(
        control_plane,
        namespace,
        "clinics",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        log=operator.log,
    )
    assert job["status"]["phase"] == "Succeeded", job["status"]
    trainer = pods(control_plane, namespace, "clinics")["clinics-trainer-clinic-a"]["spec"]
    mount = next(m for m in trainer["containers"][0]["volumeMounts"] if m["name"] == "site-data")
    assert mount == {"name": "site-data", "mountPath": "/data", "readOnly": True}

    leaking = dict(relative, **{"clinic-b": Path("../other-ward/clinic-b.parquet")})
    apply(control_plane, namespace, with_free_ports(file_job(leaking, name="leaking")))
    job = wait_job(
        control_plane, namespace, "leaking", lambda s: s.get("phase") == "Failed", log=operator.log
    )
    condition = next(c for c in job["status"]["conditions"] if c["type"] == "SpecValid")
    assert condition["reason"] == "RefusedBySite"
    assert (
        "spec.sites[1].data.file.path: '../other-ward/clinic-b.parquet' leads outside"
        in (condition["message"])
    )
    assert pods(control_plane, namespace, "leaking") == {}


def test_a_trainer_pod_recreated_mid_job_keeps_its_privacy_ledger(
    control_plane: ControlPlane, node_agent: NodeAgent, operator: OperatorProcess, namespace: str
) -> None:
    """Trainers keep their ledgers on the site's state claim (Helm site.state.claimName): the
    DP-SGD epsilon a site spent never goes back, even when its pod is deleted mid-job."""
    # Every site is needed each round: no round closes until hospital-a is back, so it
    # trains again after its pod is recreated.
    doc = with_free_ports(example("ledger", rounds=10, podCleanup="none", minSitesPerRound=5))
    doc["spec"]["privacy"] = {
        "recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0, "epsilonCap": 1000.0}
    }
    for site in doc["spec"]["sites"]:
        site["data"]["sklearn"]["partitioner"] = "iid"
    ledgers = node_agent.claim_dir(namespace, STATE_CLAIM) / namespace / "ledger"

    def spent(site: str) -> float:
        path = ledgers / site / LEDGER_FILE
        return PrivacyLedger(1e-5, None, path).epsilon if path.exists() else 0.0

    apply(control_plane, namespace, doc)
    wait_job(control_plane, namespace, "ledger", lambda s: s.get("round", 0) >= 3, log=operator.log)
    before = spent("hospital-a")
    assert before > 0
    control_plane.kubectl("delete", "pod", "ledger-trainer-hospital-a", "-n", namespace)
    seen = [before]
    job: dict[str, Any] = {}
    while job.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
        seen.append(spent("hospital-a"))
        job = get_job(control_plane, namespace, "ledger")
        time.sleep(0.2)
    assert job["status"]["phase"] == "Succeeded", job["status"]
    seen.append(spent("hospital-a"))
    # Never lower than before the pod went, and still growing after it came back.
    assert all(later >= earlier for earlier, later in itertools.pairwise(seen))
    assert seen[-1] > before
    assert pods(control_plane, namespace, "ledger")["ledger-trainer-hospital-a"]
    # Each site's fine-tuned (personal) model is saved at the site, beside its ledger, and
    # nowhere in the job's own claim.
    for site in (s["name"] for s in doc["spec"]["sites"]):
        assert load_file(ledgers / site / "personal-model.safetensors")
    job_claim = node_agent.claim_dir(namespace, "ledger-output")
    assert not list(job_claim.rglob("personal-model.safetensors"))


def test_the_operators_check_finds_every_permission_and_names_what_is_missing(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    """`fedkube-operator --check` (the chart's helm test) as the chart's ServiceAccount, and
    as one with no rights at all."""
    import os
    import subprocess
    import sys

    from tests.kube_harness.operator_env import service_account_kubeconfig

    def check(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return subprocess.run(
            [sys.executable, "-m", "fedkube_operator", "--check", *args],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip

    # As the chart's helm test runs it: the release's namespace is the site's own.
    granted = check(operator.kubeconfig, "--site-namespace", "fedkube-system")
    assert granted.returncode == 0, granted.stderr
    assert "every permission is there (every namespace)" in granted.stdout
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    nobody = service_account_kubeconfig(control_plane, tmp_path / "nobody", "nobody", namespace)
    refused = check(nobody, "--namespace", namespace, "--site-namespace", namespace)
    assert refused.returncode == 1
    assert f"cannot do its work in {namespace}" in refused.stderr
    assert f"create pods in {namespace}" in refused.stderr
    assert f"patch federatedjobs/status.fedkube.io in {namespace}" in refused.stderr
    assert "listing federatedjobs.fedkube.io failed: 403" in refused.stderr
    # The site's consents are read cluster-wide, whatever namespaces are watched.
    assert "list siteapprovals.fedkube.io (cluster-scoped)" in refused.stderr
    assert f"delete configmaps in the site's namespace {namespace}" in refused.stderr
