"""fedkube's images, built from their Dockerfiles in the suite and run by runc.

The breast-cancer job runs on a cluster of its own whose node agent is in container mode:
the chart's operator Deployment, the aggregator and the trainers all start from the images.
The chart goes in with `helm install`, and `helm test` runs from the operator's image.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedkube import __version__
from fedkube.cli.launch import free_port
from packaging.utils import canonicalize_name

from tests.kube.conftest import ARTIFACTS
from tests.kube_harness.containers import Image, build_images, run_in_image
from tests.kube_harness.controlplane import ROOT, ControlPlane
from tests.kube_harness.jobs import (
    apply,
    example,
    model_after_the_pods,
    pods,
    wait_job,
    with_free_ports,
)
from tests.kube_harness.node_agent import NodeAgent

pytestmark = pytest.mark.slow

RELEASE, RELEASE_NS = "fedkube", "fedkube-system"


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    return build_images()


@pytest.fixture(scope="module")
def image_cluster(
    images: dict[str, Image],
    kube_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[ControlPlane, NodeAgent]]:
    """A cluster whose node runs containers from the images (the other tests' node runs
    processes): its own control plane, since a node agent binds every pending pod."""
    cp = ControlPlane("images", tmp_path_factory.mktemp("cp-images"), kube_bin).start()
    agent = NodeAgent(
        cp.kubeconfig, tmp_path_factory.mktemp("node-images"), "image-node", images=images
    ).start()
    yield cp, agent
    agent.stop()
    cp.stop(keep_logs_in=ARTIFACTS if request.session.testsfailed else None)


def _helm(cp: ControlPlane, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cp.bin / "helm"), "--kubeconfig", str(cp.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_operator_image_has_no_torch_and_is_small(
    images: dict[str, Image], tmp_path: Path
) -> None:
    operator = images["operator"]
    listing = run_in_image(
        operator,
        [
            "python",
            "-c",
            "import importlib.metadata as m; "
            "print('\\n'.join(sorted(d.metadata['Name'].lower() for d in m.distributions())))",
        ],
        tmp_path,
    )
    assert listing.returncode == 0, listing.stderr
    packages = set(listing.stdout.split())
    assert {"fedkube", "kopf", "kubernetes", "pydantic"} <= packages
    assert not packages & {"torch", "numpy", "grpcio", "scikit-learn", "opacus", "triton"}
    assert not any(p.startswith("nvidia-") for p in packages)
    assert operator.size_bytes < 300 * 2**20, f"{operator.size_bytes / 2**20:.0f} MiB"
    # It runs: the operator's --help, as the image's own (non-root) user.
    helped = run_in_image(operator, ["fedkube-operator", "--help"], tmp_path)
    assert helped.returncode == 0 and "--check" in helped.stdout, helped.stderr
    assert operator.config["User"] == "65532:65532"


def test_versions_agree_between_package_cli_and_image_labels(
    images: dict[str, Image], tmp_path: Path
) -> None:
    engine = images["engine"]
    shown = run_in_image(engine, ["fedkube", "--version"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"fedkube {__version__}"
    for image in images.values():
        labels = image.labels
        assert labels["org.opencontainers.image.version"] == __version__
        assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
        assert labels["org.opencontainers.image.source"].startswith("https://")
        assert image.reference.endswith(f":{__version__}")
    # Which sources: the last commit that changed the image's inputs, and when.
    for image in images.values():
        labels = image.labels
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d",
            labels["org.opencontainers.image.created"],
        )
    assert engine.labels["io.fedkube.engine.variant"] == "cu132"
    # No pip where pods run, not even the base image's, nor wheels for ensurepip.
    for image in images.values():
        gone = run_in_image(image, ["python", "-c", "import pip"], tmp_path)
        assert gone.returncode != 0 and "No module named 'pip'" in gone.stderr, image.name
        wheels = [p for p in image.rootfs.rglob("pip-*.whl")]
        assert wheels == [], wheels
    # The licence travels in both images, as in the package.
    licence = (ROOT / "LICENSE").read_text()
    for image in images.values():
        shown = run_in_image(
            image,
            ["python", "-c", "print(open('/usr/share/licenses/fedkube/LICENSE').read(), end='')"],
            tmp_path,
        )
        assert shown.returncode == 0 and shown.stdout == licence, shown.stderr
    # The engine imports torch and trains: one local step on the bundled dataset.
    smoke = run_in_image(
        engine,
        [
            "python",
            "-c",
            "import torch, fedkube.trainer.local as t; print(torch.__version__, "
            "torch.get_num_threads() > 0)",
        ],
        tmp_path,
    )
    assert smoke.returncode == 0 and smoke.stdout.split()[1] == "True", smoke.stderr


def test_each_image_has_an_sbom_that_agrees_with_its_lock(images: dict[str, Image]) -> None:
    """The build writes each image's SBOM (CycloneDX, by syft from the unpacked image): the
    Debian packages of the base and every Python package, at exactly the lock's versions."""
    from tests.test_locks import LOCKS, read_lock

    locks = {"engine": "engine-cu132", "operator": "operator"}
    for name, image in images.items():
        bom = image.sbom
        assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"].startswith("1.")
        assert bom["metadata"]["component"]["name"] == f"fedkube/{name}"
        assert bom["metadata"]["component"]["version"] == __version__
        purls = [c.get("purl", "") for c in bom["components"]]
        debian = [p for p in purls if p.startswith("pkg:deb/debian/")]
        python, vendored = {}, []
        for c in bom["components"]:
            if c.get("purl", "").startswith("pkg:pypi/"):
                where = next(p["value"] for p in c["properties"] if p["name"].endswith(":path"))
                if "/_vendor/" in where:  # a package's own copy (setuptools vendors some)
                    vendored.append(where)
                else:
                    python[canonicalize_name(c["name"])] = c["version"]
        assert any(p.startswith("pkg:deb/debian/python3.11@") for p in debian), name
        assert len(debian) > 50, len(debian)
        pinned = {n: v for n, (v, _) in read_lock(LOCKS / f"{locks[name]}.txt").items()}
        assert python == {**pinned, "fedkube": __version__}, name
        assert all("/site-packages/setuptools/_vendor/" in v for v in vendored), vendored
        assert "pip" not in python


def test_breast_cancer_runs_from_the_images_installed_by_helm(
    image_cluster: tuple[ControlPlane, NodeAgent], images: dict[str, Image]
) -> None:
    cp, agent = image_cluster
    cp.kubectl("create", "namespace", RELEASE_NS)
    metrics_port, health_port = free_port(), free_port()
    engine, operator = images["engine"], images["operator"]
    installed = _helm(
        cp,
        "install",
        RELEASE,
        str(ROOT / "helm" / "fedkube"),
        "--namespace",
        RELEASE_NS,
        "--set",
        f"image.repository={engine.reference.rsplit(':', 1)[0]}",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        f"operator.image.repository={operator.reference.rsplit(':', 1)[0]}",
        "--set",
        "operator.image.pullPolicy=Never",
        # Pods share the node's loopback here: no cluster DNS, no pod network.
        "--set",
        "operator.aggregatorHost=127.0.0.1",
        "--set",
        f"operator.metricsPort={metrics_port}",
        "--set",
        f"operator.healthPort={health_port}",
        "--wait",
        "--timeout",
        "4m",
    )

    def operator_log() -> str:
        found = json.loads(cp.kubectl("get", "pods", "-n", RELEASE_NS, "-o", "json").stdout)[
            "items"
        ]
        return "".join(agent.logs(RELEASE_NS, p["metadata"]["name"])[-6000:] for p in found)

    assert installed.returncode == 0, installed.stderr + operator_log()

    # (No kubelet serves logs here: the check's output is read from the node agent.)
    tested = _helm(cp, "test", RELEASE, "--namespace", RELEASE_NS)
    check_log = agent.logs(RELEASE_NS, f"{RELEASE}-fedkube-test-access")
    assert tested.returncode == 0, tested.stdout + tested.stderr + check_log + operator_log()
    assert "Phase:          Succeeded" in tested.stdout
    assert "every permission is there (every namespace)" in check_log

    ns = "hospitals"
    cp.kubectl("create", "namespace", ns)
    doc = with_free_ports(example())
    apply(cp, ns, doc)
    seen_pods: dict[str, dict] = {}

    def finished(status: dict) -> bool:
        seen_pods.update(pods(cp, ns, "breast-cancer"))
        return status.get("phase") in ("Succeeded", "Failed")

    job = wait_job(cp, ns, "breast-cancer", finished, timeout=420, log=operator_log)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["round"] == status["totalRounds"] == 20
    assert 0.85 < status["accuracy"] <= 1.0

    # Every pod ran from an image, by runc: the operator's, the aggregator, five trainers.
    release_pods = json.loads(cp.kubectl("get", "pods", "-n", RELEASE_NS, "-o", "json").stdout)
    operator_pod = next(
        p
        for p in release_pods["items"]
        if p["metadata"]["name"].startswith(f"{RELEASE}-fedkube-operator")
    )
    ran = {p["spec"]["containers"][0]["image"] for p in seen_pods.values()}
    assert ran == {f"{engine.reference.rsplit(':', 1)[0]}:{__version__}"}
    assert {p["metadata"]["labels"]["fedkube.io/role"] for p in seen_pods.values()} == {
        "aggregator",
        "trainer",
    }
    statuses = [
        *operator_pod["status"]["containerStatuses"],
        *(s for p in seen_pods.values() for s in p.get("status", {}).get("containerStatuses", [])),
    ]
    assert statuses and all(s["containerID"].startswith("runc://") for s in statuses)

    # The pods go; the model stays on the job's claim, readable after them, written by the
    # pods' user (the image ran as 65532, with the fsGroup's volume), not root.
    claim = agent.claim_dir(ns, "breast-cancer-output")
    model = model_after_the_pods(cp, ns, "breast-cancer", claim, 20)
    assert model.stat().st_uid == 65532
