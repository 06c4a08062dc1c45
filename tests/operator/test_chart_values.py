"""The chart's values as a platform team meets them: names without stutter and their
overrides, the site's defaults for job pods reaching the operator, JSON logs, extra volumes, a
ServiceMonitor, the dashboard's namespace, and a values README and schema written from
values.yaml's comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fedkube_operator.job_pod_defaults import JobPodDefaults, load_job_pod_defaults

from tests.kube_harness.controlplane import ROOT
from tests.operator.test_chart import CHART, helm, rendered
from tests.tools import chart_values_docs

pytestmark = pytest.mark.needs_tools  # helm renders the chart


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_names_do_not_stutter_and_take_both_overrides() -> None:
    plain = {d["metadata"]["name"] for d in rendered() if d["kind"] != "CustomResourceDefinition"}
    assert {"fedkube-operator", "fedkube-site-policy", "fedkube-progress-key"} <= plain
    assert not [n for n in plain if "fedkube-fedkube" in n]

    out = helm("template", "hospital-a", CHART, "--namespace", "fedkube-system")
    assert out.returncode == 0, out.stderr
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(out.stdout) if d}
    assert "hospital-a-fedkube-operator" in names

    full = rendered("fullnameOverride=ward")
    deployment = _by_kind(full, "Deployment")[0]
    assert deployment["metadata"]["name"] == "ward-operator"
    # The operator's own objects follow: its policy ConfigMap, its key, its ServiceAccount.
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ward-operator"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["site-policy"]["configMap"]["name"] == "ward-site-policy"
    assert volumes["progress-key"]["secret"]["secretName"] == "ward-progress-key"
    assert {d["metadata"]["name"] for d in _by_kind(full, "ClusterRole")} >= {
        "ward-site-admin",
        "ward-site-reader",
    }

    named = rendered("nameOverride=fl")
    deployment = _by_kind(named, "Deployment")[0]
    assert deployment["metadata"]["name"] == "fedkube-fl-operator"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "fl"


def test_the_sites_job_pod_defaults_reach_the_operator_as_a_file_it_reads(
    tmp_path: Path,
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "jobPods": {
                    "resources": {
                        "trainer": {"requests": {"cpu": "1", "memory": "2Gi"}},
                        "aggregator": {"limits": {"memory": "1Gi"}},
                    },
                    "priorityClassName": "clinical-batch",
                    "runtimeClassName": "gvisor",
                    "labels": {"cost-centre": "ward-7"},
                    "annotations": {"sidecar.istio.io/inject": "false"},
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"}
                    ],
                }
            }
        )
    )
    out = helm("template", "fedkube", CHART, "-n", "fedkube-system", "-f", str(values))
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    config = next(d for d in docs if d["metadata"]["name"] == "fedkube-site-policy")
    (tmp_path / "job-pods.yaml").write_text(config["data"]["job-pods.yaml"])
    defaults = load_job_pod_defaults(tmp_path / "job-pods.yaml")
    assert defaults.priority_class_name == "clinical-batch"
    assert defaults.runtime_class_name == "gvisor"
    assert defaults.resources.trainer.requests.memory == "2Gi"
    assert defaults.topology_spread_constraints[0].topology_key == "topology.kubernetes.io/zone"
    deployment = _by_kind(docs, "Deployment")[0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--job-pod-defaults=/etc/fedkube-site/job-pods.yaml" in args
    # The defaults as shipped are a valid, empty file for the operator.
    default = next(d for d in rendered() if d["metadata"]["name"] == "fedkube-site-policy")
    (tmp_path / "empty.yaml").write_text(default["data"]["job-pods.yaml"])
    assert load_job_pod_defaults(tmp_path / "empty.yaml") == JobPodDefaults()
    # A change of them rolls the operator, which reads them at start.
    annotation = "checksum/site-policy"
    before = _by_kind(rendered(), "Deployment")[0]["spec"]["template"]["metadata"]
    after = _by_kind(rendered("jobPods.priorityClassName=high"), "Deployment")[0]
    assert (
        after["spec"]["template"]["metadata"]["annotations"][annotation]
        != (before["annotations"][annotation])
    )


def test_the_schema_refuses_a_wrong_job_pod_default() -> None:
    for value, where in (
        ("jobPods.runtimeClassName=G_Visor", "/jobPods/runtimeClassName"),
        ("jobPods.resources.trainer.requests.cpu=lots", "/jobPods/resources/trainer"),
        ("jobPods.topologySpreadConstraints[0].maxSkew=0", "/jobPods/topologySpreadConstraints/0"),
    ):
        out = helm("template", "fedkube", CHART, "--set", value)
        assert out.returncode != 0 and where in out.stderr, (value, out.stderr)


def test_json_logs_extra_volumes_a_service_monitor_and_the_dashboards_namespace() -> None:
    docs = rendered(
        "operator.logFormat=json",
        "operator.extraVolumes[0].name=ca-bundle",
        "operator.extraVolumes[0].configMap.name=hospital-ca",
        "operator.extraVolumeMounts[0].name=ca-bundle",
        "operator.extraVolumeMounts[0].mountPath=/etc/ssl/hospital",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.serviceMonitor.labels.release=kube-prometheus",
        "monitoring.dashboard.enabled=true",
        "monitoring.dashboard.namespace=grafana",
        "operator.watchNamespaces={ward-a}",
    )
    pod = _by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--log-format=json" in container["args"]
    assert {"name": "ca-bundle", "configMap": {"name": "hospital-ca"}} in pod["volumes"]
    assert {"name": "ca-bundle", "mountPath": "/etc/ssl/hospital"} in container["volumeMounts"]
    monitor = _by_kind(docs, "ServiceMonitor")[0]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    # The operator's namespace is scraped even when it is not one of the watched ones.
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ward-a", "fedkube-system"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics", "http"]
    service = next(d for d in docs if d["metadata"]["name"] == "fedkube-operator-metrics")
    selector = service["spec"]["selector"]
    labels = _by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert selector["app.kubernetes.io/component"] == "operator"
    dashboard = next(d for d in docs if d["metadata"]["name"] == "fedkube-dashboard")
    assert dashboard["metadata"]["namespace"] == "grafana"
    # Without its Service a ServiceMonitor has nothing to scrape: refused, saying what to set.
    out = helm(
        "template",
        "fedkube",
        CHART,
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "operator.metricsService.enabled=false",
    )
    assert out.returncode != 0 and "operator.metricsService.enabled" in out.stderr


def test_the_values_readme_and_schema_are_written_from_values_yaml_and_have_not_drifted() -> None:
    assert chart_values_docs.main(["--check"]) == 0
    schema = json.loads((Path(CHART) / "values.schema.json").read_text())
    values_text = (Path(CHART) / "values.yaml").read_text()
    documented = chart_values_docs.documented_values(values_text, schema)
    assert len(documented) > 100
    assert [v.path for v in documented if not v.description] == []
    readme = (Path(CHART) / "README.md").read_text()
    for v in documented:
        node = chart_values_docs.schema_node(schema, v.path)
        assert node and node["description"], v.path  # site.policy's: from the model
        assert f"| `{v.path}` |" in readme, v.path


def test_the_drift_check_names_an_undescribed_value_and_a_stale_readme(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    for name in ("values.yaml", "values.schema.json", "README.md"):
        (chart / name).write_text((ROOT / "helm" / "fedkube" / name).read_text())
    values = chart / "values.yaml"
    values.write_text(
        values.read_text().replace(
            '  # The PriorityClass of every job pod; `""`: the cluster\'s default.\n', ""
        )
    )
    readme = chart / "README.md"
    readme.write_text(readme.read_text().replace("| `tests.enabled` |", "| `tests.on` |"))
    problems = chart_values_docs.render(chart)[2]
    assert any("jobPods.priorityClassName has no comment" in p for p in problems), problems
    assert chart_values_docs.main(["--check", "--chart", str(chart)]) == 1
    assert "`tests.on`" in readme.read_text()  # --check changes nothing
    # Written again, the README is whole again.
    chart_values_docs.main(["--chart", str(chart)])
    assert "| `tests.enabled` |" in readme.read_text()


def test_two_replicas_elect_a_leader_roll_one_at_a_time_and_keep_one_through_a_drain() -> None:
    docs = rendered("operator.replicas=2", "operator.podDisruptionBudget.enabled=true")
    deployment = _by_kind(docs, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--leader-election" in container["args"]
    assert "--leader-election-namespace=fedkube-system" in container["args"]
    assert "--leader-election-name=fedkube-operator" in container["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    budget = _by_kind(docs, "PodDisruptionBudget")[0]
    assert budget["spec"]["minAvailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    # The lease is the operator's to write, in the release's namespace only.
    role = next(
        d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("trainers")
    )
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["get", "create", "update"]} in role["rules"]  # fmt: skip
    # Without a lease, one pod at a time; two replicas without one, or a budget over one
    # replica, are refused with what to set.
    alone = _by_kind(rendered("operator.leaderElection.enabled=false"), "Deployment")[0]
    assert alone["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-election" not in alone["spec"]["template"]["spec"]["containers"][0]["args"]
    for sets, says in (
        (("operator.replicas=2", "operator.leaderElection.enabled=false"), "leaderElection"),
        (("operator.podDisruptionBudget.enabled=true",), "operator.replicas to 2"),
    ):
        args = [a for s in sets for a in ("--set", s)]
        out = helm("template", "fedkube", CHART, *args)
        assert out.returncode != 0 and says in out.stderr, out.stderr
