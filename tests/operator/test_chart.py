"""The chart as the real helm binary sees it: strict lint, templating without a cluster's
version, values refused by the schema, and RBAC that follows watchNamespaces."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.kube_harness.controlplane import ROOT, binaries

CHART = str(ROOT / "helm" / "fedkube")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries() / "helm"), *args], capture_output=True, text=True)


def rendered(*sets: str) -> list[dict]:
    args = [a for s in sets for a in ("--set", s)]
    out = helm("template", "fedkube", CHART, "--namespace", "fedkube-system", *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("sets", [[], ["site.name=hospital-a"]], ids=["no site", "a site"])
def test_the_chart_lints_strictly_and_renders_without_a_kube_version(sets: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    lint = helm("lint", "--strict", CHART, *args)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert {d["kind"] for d in rendered(*sets)} >= {"Deployment", "ClusterRole"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.metricsPort=abc", "at '/operator/metricsPort': got string, want integer"),
        ("operator.metricsPort=70000", "at '/operator/metricsPort'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("site.name=Hospital_A", "at '/site/name'"),
        ("operator.bogus=1", "additional properties 'bogus' not allowed"),
        ("bogus=1", "additional properties 'bogus' not allowed"),
    ],
)
def test_a_wrong_type_or_an_unknown_key_is_refused(value: str, message: str) -> None:
    out = helm("template", "fedkube", CHART, "--set", value)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_watch_namespaces_gets_namespaced_roles_and_no_cluster_wide_pod_verbs() -> None:
    docs = rendered("operator.watchNamespaces={ward-a,ward-b}")
    kinds = [d["kind"] for d in docs]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"ward-a", "ward-b"}
    for role in roles.values():
        pods = next(r for r in role["rules"] if "pods" in r["resources"])
        assert set(pods["verbs"]) == {"get", "list", "watch", "create", "delete"}
    for binding in bindings.values():
        assert binding["subjects"][0]["namespace"] == "fedkube-system"
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ward-a" in args and "--namespace=ward-b" in args
    # Watching every namespace is what a ClusterRole is for.
    assert "ClusterRole" in [d["kind"] for d in rendered()]


def test_the_chart_readme_lists_every_value() -> None:
    values = yaml.safe_load((ROOT / "helm" / "fedkube" / "values.yaml").read_text())
    readme = (ROOT / "helm" / "fedkube" / "README.md").read_text()

    def leaves(node: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in node.items():
            path = f"{prefix}{key}"
            # Maps a user fills freely are one value each.
            nested = isinstance(value, dict) and value
            if nested and key not in ("resources", "labels", "annotations"):
                out += leaves(value, path + ".")
            else:
                out.append(path)
        return out

    assert [p for p in leaves(values) if f"`{p}`" not in readme] == []


def test_the_operator_pod_takes_the_sites_scheduling_and_image_settings() -> None:
    digest = "sha256:" + "ab" * 32
    docs = rendered(
        f"image.digest={digest}",
        "image.pullSecrets={regcred}",
        "operator.nodeSelector.zone=secure",
        "operator.priorityClassName=clinical",
        "podSecurity.runAsUser=null",
    )
    spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["image"] == f"fedkube/trainer@{digest}"
    assert {"name": "FEDKUBE_IMAGE", "value": f"fedkube/trainer@{digest}"} in container["env"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"zone": "secure"}
    assert spec["priorityClassName"] == "clinical"
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsGroup": 65532,
        "fsGroup": 65532,
    }
    assert "--pod-user=none" in container["args"] and "--pod-group=65532" in container["args"]
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics"}]
