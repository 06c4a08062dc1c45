"""A release, published and installed as a new site would: no checkout on any path.

tests/tools/release.sh builds the wheel and sdist, both images and the chart, and publishes
them signed (cosign, a key made here) to a real OCI registry the test starts (CNCF
distribution). A cluster of its own then runs from the registry alone: its node agent
resolves each pod's image to a digest, verifies its signature with the release's public key,
pulls and unpacks it, and runs it with runc. From an empty folder, the site installs the
wheel in a fresh venv, the chart from the registry, applies an example the package ships,
and fetches the model with `fedkube fetch`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fedkube import __version__
from fedkube.cli.launch import free_port

from tests.kube.conftest import ARTIFACTS
from tests.kube_harness.containers import build_images
from tests.kube_harness.controlplane import ROOT, ControlPlane
from tests.kube_harness.image_store import MACHINE_STORE, RegistryImages
from tests.kube_harness.jobs import pods, wait_job
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.oci_layout import with_last_layer_changed
from tests.kube_harness.registry import Registry

pytestmark = pytest.mark.slow

RELEASE_SCRIPT = ROOT / "tests" / "tools" / "release.sh"
QUICKSTART = ROOT / "docs" / "quickstart.md"
RELEASE, RELEASE_NS = "fedkube", "fedkube-system"
PASSWORD = "release-key-password"


@dataclass(frozen=True)
class Published:
    registry: Registry
    out: Path  # release.sh's --out: dist/, chart/, sbom/, cosign.pub, release.json
    release: dict[str, Any]
    key: Path

    def digest(self, image: str) -> str:
        return str(self.release["images"][image]["digest"])


def _host_address() -> str:
    """One of this machine's own non-loopback addresses: the API server's pod proxy (which
    `fedkube fetch` reads through) refuses loopback, and pods share the host's network."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out.stdout)
    if found is None:
        pytest.fail("this machine has no IPv4 address but loopback; the pod proxy needs one")
    return found.group(1)


def _cosign(kube_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kube_bin / "cosign"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COSIGN_PASSWORD": PASSWORD, "TUF_ROOT": "/nonexistent-tuf"},
    )


@pytest.fixture(scope="module")
def published(kube_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("release")
    registry = Registry(kube_bin / "registry", root / "registry").start()
    try:
        made = _cosign(kube_bin, "generate-key-pair", "--output-key-prefix", str(root / "release"))
        assert made.returncode == 0, made.stderr
        out = subprocess.run(
            ["bash", str(RELEASE_SCRIPT), "--registry", registry.host, "--key",
             str(root / "release.key"), "--out", str(root / "out"), "--plain-http"],
            capture_output=True, text=True, timeout=3600,
            env={**os.environ, "COSIGN_PASSWORD": PASSWORD},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-6000:]
        release = json.loads((root / "out" / "release.json").read_text())
        yield Published(registry, root / "out", release, root / "release.key")
    finally:
        registry.stop()
        # GBs (the engine's layers): pytest keeps its last runs' folders, not these.
        shutil.rmtree(registry.root / "storage", ignore_errors=True)


@pytest.fixture(scope="module")
def release_cluster(
    published: Published,
    kube_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[ControlPlane, NodeAgent, RegistryImages]]:
    """A cluster whose node runs only signed images from the release's registry: its own
    control plane, since a node agent binds every pending pod."""
    cp = ControlPlane("release", tmp_path_factory.mktemp("cp-release"), kube_bin).start()
    images = RegistryImages(
        MACHINE_STORE,
        kube_bin / "cosign",
        published.out / "cosign.pub",
        plain_http=frozenset({published.registry.host}),
    )
    agent = NodeAgent(
        cp.kubeconfig,
        tmp_path_factory.mktemp("node-release"),
        "release-node",
        images=images,
        pod_ip=_host_address(),
    ).start()
    yield cp, agent, images
    agent.stop()
    cp.stop(keep_logs_in=ARTIFACTS if request.session.testsfailed else None)


def test_the_release_is_published_signed_with_its_sboms_beside(
    published: Published, kube_bin: Path
) -> None:
    release, registry = published.release, published.registry.host
    assert release["version"] == __version__
    assert sorted(release["python"]) == [
        f"fedkube-{__version__}-py3-none-any.whl",
        f"fedkube-{__version__}.tar.gz",
    ]
    for entry in release["python"].values():
        data = (published.out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert release["images"]["engine"]["reference"] == (
        f"{registry}/fedkube/engine:{__version__}-cu132"
    )
    assert (
        release["images"]["operator"]["reference"] == f"{registry}/fedkube/operator:{__version__}"
    )
    assert release["chart"]["reference"] == f"oci://{registry}/charts/fedkube"
    http = "--allow-http-registry"
    for name, image in release["images"].items():
        pinned = f"{registry}/fedkube/{name}@{image['digest']}"
        verified = _cosign(kube_bin, "verify", http, "--insecure-ignore-tlog=true", "--key",
                           str(published.out / "cosign.pub"), pinned)  # fmt: skip
        assert verified.returncode == 0, verified.stderr
        assert (
            json.loads(verified.stdout)[0]["critical"]["image"]["docker-manifest-digest"]
            == (image["digest"])
        )
        # The SBOM beside the release is the one attested in the registry, signed.
        attested = _cosign(kube_bin, "verify-attestation", http, "--insecure-ignore-tlog=true",
                           "--type", "cyclonedx", "--key", str(published.out / "cosign.pub"),
                           pinned)  # fmt: skip
        assert attested.returncode == 0, attested.stderr
        statement = json.loads(base64.b64decode(json.loads(attested.stdout)["payload"]))
        sbom = json.loads((published.out / image["sbom"]).read_text())
        assert statement["predicate"] == sbom
        assert sbom["metadata"]["component"]["name"] == f"fedkube/{name}"
    chart = release["chart"]
    signed_chart = _cosign(kube_bin, "verify", http, "--insecure-ignore-tlog=true", "--key",
                           str(published.out / "cosign.pub"),
                           f"{registry}/charts/fedkube@{chart['digest']}")  # fmt: skip
    assert signed_chart.returncode == 0, signed_chart.stderr
    # Another key's signature is no signature.
    other = published.out.parent / "other"
    assert _cosign(kube_bin, "generate-key-pair", "--output-key-prefix", str(other)).returncode == 0
    engine = f"{registry}/fedkube/engine@{published.digest('engine')}"
    refused = _cosign(kube_bin, "verify", http, "--insecure-ignore-tlog=true", "--key",
                      f"{other}.pub", engine)  # fmt: skip
    assert refused.returncode != 0


def _site_env(site: Path, venv: Path, kube_bin: Path, cp: ControlPlane) -> dict[str, str]:
    """What a site's admin has: the package in a venv, kubectl and helm; no checkout."""
    return {
        "PATH": f"{venv}/bin:{kube_bin}:/usr/bin:/bin",
        "HOME": str(site / "home"),
        "KUBECONFIG": str(cp.kubeconfig),
        "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "LANG": "C.UTF-8",
    }


def _run(argv: list[str], site: Path, env: dict[str, str], timeout: float = 600) -> str:
    out = subprocess.run(argv, cwd=site, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv}: {out.stdout[-3000:]}{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def test_a_site_installs_the_release_from_an_empty_folder_runs_an_example_and_fetches_the_model(
    published: Published,
    release_cluster: tuple[ControlPlane, NodeAgent, RegistryImages],
    kube_bin: Path,
    tmp_path: Path,
) -> None:
    cp, agent, _ = release_cluster
    registry = published.registry.host
    # docs/quickstart.md is this test's commands as a reader types them: each one run here is
    # there as written, but for the registry (ghcr.io there) and the loopback settings.
    quickstart = QUICKSTART.read_text()

    def documented(command: str) -> None:
        assert command in quickstart, f"docs/quickstart.md does not show: {command}"

    site = tmp_path / "site"
    (site / "home").mkdir(parents=True)
    venv = site / "venv"
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True)
    env = _site_env(site, venv, kube_bin, cp)
    wheel = next(
        published.out / e["path"]
        for n, e in published.release["python"].items()
        if n.endswith(".whl")
    )
    _run(["pip", "install", "--quiet", str(wheel)], site, env)
    documented("pip install fedkube")
    where = _run(["python", "-c", "import fedkube; print(fedkube.__file__)"], site, env)
    assert str(venv) in where and str(ROOT) not in where
    # The core alone (no torch) makes the site's key and signing request.
    _run(["fedkube", "certs", "request", "--name", "hospital-a", "--out", "keys"], site, env)
    assert (site / "keys" / "tls.key").exists() and (site / "keys" / "request.csr").exists()
    no_torch = _run(["python", "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                    site, env)  # fmt: skip
    assert no_torch.strip() == "None"

    metrics_port, health_port = free_port(), free_port()
    chart = f"oci://{registry}/charts/fedkube"
    installed = _run(["helm", "install", RELEASE, chart, "--version", __version__, "--plain-http",
          "--namespace", RELEASE_NS, "--create-namespace",
          "--set", f"global.imageRegistry={registry}",
          # Pods share the node's network here: no cluster DNS, no pod network.
          "--set", "operator.aggregatorHost=127.0.0.1",
          "--set", f"operator.metricsPort={metrics_port}",
          "--set", f"operator.healthPort={health_port}",
          "--wait", "--timeout", "6m"], site, env)  # fmt: skip
    # Its notes say what a site without a state claim does not keep across pods.
    assert "No site.state.claimName: each trainer keeps its privacy ledger" in installed
    documented(
        f"helm install {RELEASE} oci://ghcr.io/fedkube/charts/fedkube --version {__version__} "
        f"--namespace {RELEASE_NS} --create-namespace --wait"
    )
    tested = _run(["helm", "test", RELEASE, "--namespace", RELEASE_NS], site, env)
    documented(f"helm test {RELEASE} --namespace {RELEASE_NS}")
    assert "Phase:          Succeeded" in tested

    listed = _run(["fedkube", "examples", "ex"], site, env)
    assert "ex/breast-cancer.yaml" in listed
    _run(["kubectl", "create", "namespace", "hospitals"], site, env)
    _run(["kubectl", "apply", "-n", "hospitals", "-f", "ex/breast-cancer.yaml"], site, env)
    for command in (
        "fedkube examples ex",
        "kubectl create namespace hospitals",
        "kubectl apply -n hospitals -f ex/breast-cancer.yaml",
    ):
        documented(command)

    seen: dict[str, dict[str, Any]] = {}

    def operator_log() -> str:
        found = json.loads(cp.kubectl("get", "pods", "-n", RELEASE_NS, "-o", "json").stdout)
        names = [p["metadata"]["name"] for p in found["items"]]
        return "".join(agent.logs(RELEASE_NS, n)[-6000:] for n in names) + str(agent.errors)

    def finished(status: dict[str, Any]) -> bool:
        seen.update(pods(cp, "hospitals", "breast-cancer"))
        return status.get("phase") in ("Succeeded", "Failed")

    job = wait_job(cp, "hospitals", "breast-cancer", finished, timeout=600, log=operator_log)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    wait = ["kubectl", "wait", "-n", "hospitals", "fj/breast-cancer",
            "--for=jsonpath={.status.phase}=Succeeded", "--timeout=15m"]  # fmt: skip
    waited = _run(wait, site, env)
    assert "condition met" in waited
    documented(" ".join(wait))
    shown = _run(["kubectl", "get", "-n", "hospitals", "fj", "breast-cancer"], site, env)
    assert "Succeeded" in shown
    documented("kubectl get -n hospitals fj breast-cancer")
    assert status["round"] == status["totalRounds"] == 20
    assert 0.85 < status["accuracy"] <= 1.0
    assert status["engineImage"] == f"{registry}/fedkube/engine:{__version__}-cu132"

    # Every container ran by runc from the digest the release signed.
    operators = json.loads(cp.kubectl("get", "pods", "-n", RELEASE_NS, "-o", "json").stdout)
    statuses = [
        *(s for p in operators["items"] for s in p["status"].get("containerStatuses", [])),
        *(s for p in seen.values() for s in p.get("status", {}).get("containerStatuses", [])),
    ]
    assert len(statuses) >= 1 + 1 + 5  # the operator, the aggregator, five trainers
    expected = {f"{registry}/fedkube/{n}@{published.digest(n)}" for n in ("engine", "operator")}
    assert {s["imageID"] for s in statuses} == expected
    assert all(s["containerID"].startswith("runc://") for s in statuses)

    # The model off the cluster, through the API server alone; its helper pod goes.
    # (Pods share this machine's network: the helper takes a port that is free here.)
    fetched = _run(["fedkube", "fetch", "breast-cancer", "-n", "hospitals", "--to", "trained",
                    "--helper-port", str(free_port())], site, env, timeout=300)  # fmt: skip
    model = (site / "trained" / "model.safetensors").read_bytes()
    card = json.loads((site / "trained" / "model-card.json").read_text())
    assert card["modelSha256"] == hashlib.sha256(model).hexdigest()
    assert json.loads((site / "trained" / "result.json").read_text())["roundsCompleted"] == 20
    on_claim = agent.claim_dir("hospitals", "breast-cancer-output") / "output" / "model.safetensors"
    assert model == on_claim.read_bytes()
    assert on_claim.stat().st_uid == 65532  # written by the image's user, not root
    assert "trained/model.safetensors" in fetched
    documented("fedkube fetch breast-cancer -n hospitals --to trained")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = json.loads(
            cp.kubectl("get", "pods", "-n", "hospitals", "-l", "fedkube.io/role=fetch", "-o",
                       "json").stdout
        )["items"]  # fmt: skip
        if not left:
            break
        time.sleep(0.5)
    assert left == []


def _refusal(cp: ControlPlane, ns: str, pod: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = json.loads(cp.kubectl("get", "pod", pod, "-n", ns, "-o", "json").stdout)
        for c in found.get("status", {}).get("containerStatuses", []):
            waiting = c.get("state", {}).get("waiting", {})
            if waiting.get("reason") not in (None, "ContainerCreating"):
                return dict(waiting)
        time.sleep(0.5)
    raise AssertionError(f"pod {ns}/{pod} was never refused: {found.get('status')}")


def _pod(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": ["python", "-c", "print('this must never run')"],
                    "securityContext": {"readOnlyRootFilesystem": True},
                }
            ],
        },
    }


def test_an_unsigned_image_and_a_tampered_one_are_refused_with_the_reason_in_the_pod_status(
    published: Published,
    release_cluster: tuple[ControlPlane, NodeAgent, RegistryImages],
    kube_bin: Path,
    tmp_path: Path,
) -> None:
    cp, agent, images = release_cluster
    registry = published.registry.host
    operator = build_images()["operator"]
    repository = f"{registry}/fedkube/operator"

    def push(layout: Path, tag: str) -> None:
        copied = subprocess.run(
            ["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{layout}:{operator.tag}", f"docker://{repository}:{tag}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert copied.returncode == 0, copied.stderr

    # Unsigned: one layer changed and pushed where the release publishes, never signed.
    unsigned = with_last_layer_changed(
        operator.oci, tmp_path / "unsigned", operator.tag, b"\n# changed after the release\n"
    )
    push(tmp_path / "unsigned", f"{__version__}-unsigned")
    # Tampered: signed with the release's key, then one layer's bytes changed at the registry.
    signed = with_last_layer_changed(
        operator.oci, tmp_path / "tampered", operator.tag, b"\n# a build of its own\n"
    )
    push(tmp_path / "tampered", f"{__version__}-tampered")
    signing = _cosign(kube_bin, "sign", "--key", str(published.key), "--tlog-upload=false",
                      "--allow-http-registry", "--yes", f"{repository}@{signed}")  # fmt: skip
    assert signing.returncode == 0, signing.stderr
    manifest = json.loads(
        (tmp_path / "tampered" / "blobs" / "sha256" / signed.split(":")[1]).read_text()
    )
    layer = manifest["layers"][-1]["digest"].split(":")[1]
    stored = (
        published.registry.root / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
        / layer[:2] / layer / "data"
    )  # fmt: skip
    stored.write_bytes(stored.read_bytes()[:-64] + b"\0" * 64)

    ns = "intruders"
    cp.kubectl("create", "namespace", ns)
    for name, tag in (("unsigned", "unsigned"), ("tampered", "tampered")):
        cp.kubectl("apply", "-n", ns, "-f", "-",
                   input=json.dumps(_pod(name, f"{repository}:{__version__}-{tag}")))  # fmt: skip

    refused = _refusal(cp, ns, "unsigned")
    assert refused["reason"] == "SignatureValidationFailed", refused
    assert unsigned in refused["message"] and "no valid signature" in refused["message"]
    tampered = _refusal(cp, ns, "tampered")
    assert tampered["reason"] == "ErrImagePull", tampered
    assert re.search(r"[Dd]igest", tampered["message"]), tampered
    # Neither ran, nor was either kept on the node.
    for name in ("unsigned", "tampered"):
        pod = json.loads(cp.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
        assert pod["status"]["phase"] == "Pending"
        assert pod["metadata"]["uid"] not in agent.runs
        assert agent.logs(ns, name) == ""
    assert unsigned not in images.pulls and signed not in images.pulls
    kept = [d.read_text() for d in images.store.glob("bundles/*/digest")]
    assert unsigned not in kept and signed not in kept
