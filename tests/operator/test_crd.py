"""The CRD and the chart: generated from the spec models, never drifting, and a valid chart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from fedkube_operator import crd

from tests.kube_harness.controlplane import ROOT, binaries

pytestmark = pytest.mark.needs_tools  # helm lints and renders the chart


def test_checked_in_crds_match_the_models() -> None:
    assert crd.main(["--check"]) == 0, "run `python -m fedkube_operator.crd` and commit the result"


def test_schema_is_structural() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
            assert not ("properties" in node and "additionalProperties" in node), path
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(crd.crd()["spec"]["versions"][0]["schema"], "schema")


def test_printer_columns_and_names() -> None:
    doc = yaml.safe_load((ROOT / "crds" / "federatedjobs.yaml").read_text())
    version = doc["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"] if c["priority"] == 0]
    assert names == ["Phase", "Round", "Accuracy", "Age"]
    assert doc["spec"]["names"]["shortNames"] == ["fj"]
    assert version["subresources"] == {"status": {}}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries() / "helm"), *args], capture_output=True, text=True)


def test_chart_lints_and_renders(tmp_path: Path) -> None:
    chart = str(ROOT / "helm" / "fedkube")
    lint = helm("lint", chart, "--set", "site.name=hospital-a")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    out = helm(
        "template",
        "fedkube",
        chart,
        "--namespace",
        "fedkube-system",
        "--kube-version",
        "1.35.4",
        "--set",
        "site.name=hospital-a",
        "--include-crds",
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",  # the operator's
        "ClusterRole",  # its reading of the site's approvals
        "ClusterRole",  # the site admin's
        "ClusterRole",  # reading the site's status
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "ClusterRoleBinding",  # every authenticated user reads the site's status
        "ConfigMap",  # the site's policy
        "CustomResourceDefinition",  # FederatedJob
        "CustomResourceDefinition",  # FederatedSite
        "CustomResourceDefinition",  # SiteApproval
        "Deployment",
        "Pod",  # helm test's
        "Role",  # the operator's, in the site's own namespace
        "RoleBinding",
        "Secret",  # the operator's key for the jobs' /progress tokens
        "Service",
        "ServiceAccount",
    ]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deploy["spec"]["template"]["metadata"]["labels"]["fedkube.io/site"] == "hospital-a"
    # Trainers that read the site's data run in the release's namespace, with its certificate.
    assert "--site-namespace=fedkube-system" in container["args"]
    assert "--site-tls-secret=fedkube-{site}-tls" in container["args"]
