"""fedkube's images, built from their Dockerfiles in the suite and run by runc: what is in
them (packages, labels, licence, SBOM) and that they run. test_release.py publishes them and
runs a job's every pod from them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from fedkube import __version__
from packaging.utils import canonicalize_name

from tests.kube_harness.containers import BuiltImage, Image, build_images, run_in_image
from tests.kube_harness.controlplane import ROOT
from tests.kube_harness.image_store import MACHINE_STORE, ImageStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built() -> dict[str, BuiltImage]:
    return build_images()


@pytest.fixture(scope="module")
def images(built: dict[str, BuiltImage]) -> dict[str, Image]:
    """The built images, unpacked into the machine's store (where a node pulling the same
    digest finds them)."""
    store = ImageStore(MACHINE_STORE)
    return {name: store.unpacked(image) for name, image in built.items()}


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
    # Tagged with the version, the engine with its variant too.
    assert images["engine"].reference.endswith(f":{__version__}-cu132")
    assert images["operator"].reference.endswith(f":{__version__}")
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


def test_each_image_has_an_sbom_that_agrees_with_its_lock(built: dict[str, BuiltImage]) -> None:
    """The build writes each image's SBOM (CycloneDX, by syft from the image's layout): the
    Debian packages of the base and every Python package, at exactly the lock's versions."""
    from tests.test_locks import LOCKS, read_lock

    locks = {"engine": "engine-cu132", "operator": "operator"}
    for name, image in built.items():
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


def test_a_build_without_room_on_the_disk_stops_before_it_starts(tmp_path: Path) -> None:
    """An image build that runs out of disk fails minutes in, deep inside buildah (CI saw
    "no space left on device" while the engine's last layer committed): the script compares
    what it will build with the room it has first, and says what to do."""
    shim = tmp_path / "bin"
    shim.mkdir()
    # df reports 1 GB available, whatever it is asked about.
    (shim / "df").write_text(
        "#!/bin/sh\n"
        "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        "echo '/dev/fake 300000000 298951424 1048576 99% /'\n"
    )
    (shim / "df").chmod(0o755)
    cache = tmp_path / "cache"
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "FEDKUBE_TOOLS_CACHE": str(cache)}
    done = subprocess.run(
        ["bash", str(ROOT / "tests" / "tools" / "build-images.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    # Nothing built: the base (1 GB), the engine (25) and the operator (1) are all missing.
    assert f"needs about 27 GB free on the disk of {cache}/images; it has 1 GB" in done.stderr, (
        done.stderr
    )
    assert "FEDKUBE_TOOLS_CACHE" in done.stderr
    assert "debootstrap" not in done.stderr
    assert list((cache / "images" / "layouts").iterdir()) == []
