"""A real Prometheus scrapes a real job end to end (the operator, a Kubernetes job's
aggregator, and a `fedkube` job run as local processes), then every query of the shipped
dashboard and alert rules runs through its HTTP API."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedkube.testing import LocalJob, manifest
from fedkube_operator.dashboard import OUT as DASHBOARD
from fedkube_operator.dashboard import expressions

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import apply, example, result_file, wait_job, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess
from tests.monitoring.chart import rendered, write_rules
from tests.monitoring.pod_monitor import PodDiscovery, scrape_configs
from tests.monitoring.prometheus import Prometheus
from tests.support.waiting import eventually

# Grafana's variables, as a user picking "All" would have them.
VARIABLES = {"$cluster": ".*", "$namespace": ".*", "$fedjob": ".*", "$__rate_interval": "1m"}


@pytest.fixture()
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    # Alerts fire at once here; the chart's default waits 5 minutes.
    rules = write_rules(tmp_path, "monitoring.alerts.for=0s")
    server = Prometheus(tmp_path, rules).start()
    yield server
    server.stop()


def _firing(prometheus: Prometheus, alert: str, **labels: str) -> list[dict[str, object]]:
    return [
        a
        for a in prometheus.firing()
        if a["labels"]["alertname"] == alert
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


@pytest.mark.slow
def test_prometheus_scrapes_a_real_job_and_every_dashboard_query_and_alert_works(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    node_agent: NodeAgent,
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    started = time.time()
    # The chart's PodMonitor with watchNamespaces set, applied as the Prometheus Operator
    # would: pod discovery on the API server finds the operator in the release's namespace
    # (not a watched one) and the job's aggregator in the watched one.
    release = f"fedkube-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", release)
    docs = rendered(
        f"operator.metricsPort={operator.metrics_port}",
        f"operator.watchNamespaces={{{namespace}}}",
        "monitoring.podMonitor.enabled=true",
        namespace=release,
    )
    operator_pod = stand_in_operator_pod(control_plane, release, docs)
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    discovery = PodDiscovery(control_plane.kubectl)
    prometheus.discover(scrape_configs(monitor, discovery.url))

    # On Kubernetes: a job that trains to the end, and one that fails at once.
    doc = with_free_ports(example("watched", rounds=12))
    apply(control_plane, namespace, doc)
    broken = with_free_ports(example("broken-model"))
    broken["spec"]["task"]["model"] = {"importPath": "hospital_models_missing:make_model"}
    apply(control_plane, namespace, broken)

    # As local processes: record-level DP under each site's cap, and a site that never comes.
    local = manifest("dp-local", sites=4, rounds=6, min_sites=3, timeout=20)
    local["spec"]["joinGraceSeconds"] = 1
    local["spec"]["privacy"] = {
        "recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0, "epsilonCap": 50.0}
    }
    (tmp_path / "local").mkdir()
    job = LocalJob(tmp_path / "local", local)
    job.aggregator_args = ["--linger-seconds", "60"]
    prometheus.scrape(f"127.0.0.1:{job.http_port}", namespace="local")
    try:
        job.start_aggregator()
        for site in ("site-0", "site-1", "site-2"):  # site-3 never connects
            job.start_trainer(site)
        statuses: list[float] = []

        def succeeded(status: dict[str, object]) -> bool:
            if isinstance(status.get("accuracy"), float):
                statuses.append(status["accuracy"])  # type: ignore[arg-type]
            return status.get("phase") == "Succeeded"

        wait_job(control_plane, namespace, "watched", succeeded, log=operator.log)
        # The status only ever showed final figures: each is some round's, as in result.json.
        result = result_file(node_agent.root, namespace, "watched")
        final = {round(h["accuracy"], 6) for h in result["history"] if "accuracy" in h}
        assert statuses and set(statuses) <= final, (statuses, final)
        assert statuses[-1] == round(result["global"]["accuracy"], 6)
        wait_job(control_plane, namespace, "broken-model", lambda s: s.get("phase") == "Failed")
        job.wait_for(lambda p: p.phase == "Succeeded", timeout=240)

        failed = eventually(
            lambda: _firing(prometheus, "FedkubeJobFailed", fedjob="broken-model"),
            60,
            "FedkubeJobFailed",
        )
        assert failed
        missing = eventually(
            lambda: _firing(prometheus, "FedkubeSiteMissing", fedjob="dp-local", site="site-3"),
            60,
            "FedkubeSiteMissing for site-3",
        )
        assert missing
        assert not _firing(prometheus, "FedkubeJobFailed", fedjob="watched")
        assert not _firing(prometheus, "FedkubeSiteMissing", fedjob="watched")

        # The operator's series, scraped through the PodMonitor, and the aggregator's.
        scraped = prometheus.api("query", query="fedkube_jobs")["result"]
        assert {(r["metric"]["namespace"], r["metric"]["pod"]) for r in scraped} == {
            (release, operator_pod)
        }, scraped
        completed = prometheus.api(
            "query", query='max_over_time(fedkube_rounds_completed{fedjob="watched"}[5m])'
        )["result"]
        sources = {r["metric"].get("pod", "") for r in completed}
        assert operator_pod in sources and "watched-aggregator" in sources, completed
        assert {r["metric"]["fedjob_namespace"] for r in completed} == {namespace}

        # Which release each process runs: the operator and both kinds of aggregator.
        from fedkube import __version__
        from fedkube.proto import PROTOCOL_VERSION

        builds = prometheus.api("query", query="max_over_time(fedkube_build_info[5m])")["result"]
        assert {
            (b["metric"]["component"], b["metric"]["version"], b["metric"]["protocol"])
            for b in builds
        } == {
            ("operator", __version__, str(PROTOCOL_VERSION)),
            ("aggregator", __version__, str(PROTOCOL_VERSION)),
        }, builds

        time.sleep(3)  # a few more scrapes of the lingering aggregator
        end = time.time()
        dashboard = json.loads(DASHBOARD.read_text())
        empty = []
        for title, expr in expressions(dashboard):
            query = expr
            for name, value in VARIABLES.items():
                query = query.replace(name, value)
            if not prometheus.query_range(query, started, end):
                empty.append(f"{title}: {query}")
        assert not empty, "panels without data:\n" + "\n".join(empty) + prometheus.log()

        # Every alert rule's expression is valid PromQL that Prometheus evaluates.
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 7 and all(r["health"] == "ok" for r in rules), rules
    finally:
        job.stop()
        discovery.stop()


def stand_in_operator_pod(cp: ControlPlane, namespace: str, docs: list[dict]) -> str:
    """The chart's operator pod as the API server would list it (its labels, its ports), on
    a node of its own, for discovery to find; the operator itself is the harness's process,
    serving the metrics port the chart was rendered with, on the pod IP given here."""
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "monitoring-stand-in"}}
        ),
    )
    template = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    container = template["spec"]["containers"][0]
    name = "fedkube-operator-stand-in"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": {
            "nodeName": "monitoring-stand-in",
            "containers": [
                {"name": "operator", "image": container["image"], "ports": container["ports"]}
            ],
        },
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(pod))
    status = {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}
    cp.kubectl(
        "-n",
        namespace,
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    return name
