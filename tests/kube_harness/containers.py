"""The node agent's container mode: a pod's containers run from fedkube's images with runc.

The images are built from the Dockerfiles by tests/tools/build-images.sh into OCI layouts and
unpacked into OCI bundles (umoci, image_store): the node agent runs the ones it pulled from a
registry.
Each container gets a runtime spec made from its image's config and the pod, as kubelet and a
container runtime would make it:

- the image's entrypoint and command, replaced by the container's ``command`` and ``args``;
- the image's environment, then the container's;
- the pod's (or container's) user, group and fsGroup, capabilities dropped as asked, no new
  privileges, and a read-only root (every container of an image shares its unpacked root, so
  a container that does not ask for a read-only root is refused);
- each volume mount as a bind mount (read-only where asked), and the pod's ServiceAccount
  token where it would be mounted;
- the host's network namespace (pods share loopback here, as in process mode), and its own
  PID, IPC, UTS and mount namespaces.

runc refuses this machine's rlimits and cgroup settings, so the spec has neither.
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.tools import build_output

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def without_tag(reference: str) -> str:
    """registry/repository of an image reference, its :tag or @digest left off."""
    name = reference.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


class _WithConfig:
    """An image's OCI config (entrypoint, user, labels), from the image.json in its folder."""

    def _image_json(self) -> Path:
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self._image_json().read_text())["config"]
        return config

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})


@dataclass(frozen=True)
class BuiltImage(_WithConfig):
    """An image as build-images.sh left it: an OCI layout with its config and SBOM beside."""

    name: str  # engine, operator
    reference: str  # localhost/fedkube/engine:0.1.0-cu132
    folder: Path  # oci/ (the layout, gzip layers), image.json, sbom.cdx.json, compressed-bytes

    @property
    def oci(self) -> Path:
        return self.folder / "oci"

    @property
    def tag(self) -> str:
        return self.reference[len(without_tag(self.reference)) + 1 :]

    def _image_json(self) -> Path:
        return self.folder / "image.json"

    @property
    def sbom(self) -> dict[str, Any]:
        """The image's SBOM (CycloneDX JSON) that the build wrote beside its layout."""
        bom: dict[str, Any] = json.loads((self.folder / "sbom.cdx.json").read_text())
        return bom

    @property
    def compressed_bytes(self) -> int:
        return int((self.folder / "compressed-bytes").read_text())


@dataclass(frozen=True)
class Image(_WithConfig):
    """An image unpacked into an OCI bundle that runc starts (image_store makes them)."""

    name: str  # engine, operator
    reference: str  # what the pod named, or the build's reference
    bundle: Path  # rootfs/, config.json (umoci's), image.json (the image's OCI config), digest

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    def _image_json(self) -> Path:
        return self.bundle / "image.json"

    @property
    def image_id(self) -> str:
        """repository@digest, as kubelet reports what a container runs."""
        digest = (self.bundle / "digest").read_text().strip()
        return f"{without_tag(self.reference)}@{digest}"

    @property
    def size_bytes(self) -> int:
        return int((self.bundle / "rootfs-bytes").read_text())


def build_images() -> dict[str, BuiltImage]:
    """fedkube's images by name, built on first use (cached outside the repository)."""
    images = {}
    for line in build_output("build-images.sh", "fedkube's images"):
        name, reference, folder = line.split()
        images[name] = BuiltImage(name, reference, Path(folder))
    return images


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


def _capabilities(security: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    caps = copy.deepcopy(template)
    drop = {c.upper() for c in (security.get("capabilities") or {}).get("drop") or []}
    add = {"CAP_" + c.upper() for c in (security.get("capabilities") or {}).get("add") or []}
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        kept = set() if "ALL" in drop else set(caps.get(kind) or []) - {f"CAP_{d}" for d in drop}
        caps[kind] = sorted(kept | add) if kind != "ambient" else sorted(kept)
    return caps


def runtime_spec(
    image: Image,
    pod: dict[str, Any],
    container: dict[str, Any],
    env: dict[str, str],
    mounts: list[Mount],
) -> dict[str, Any]:
    """The OCI runtime spec (config.json) for one container of a pod, both as API dicts."""
    spec: dict[str, Any] = json.loads((image.bundle / "config.json").read_text())
    config = image.config
    entrypoint = container.get("command") or config.get("Entrypoint") or []
    # As Kubernetes does: a command replaces the image's entrypoint and its command too.
    command = container.get("args") or ([] if container.get("command") else config.get("Cmd"))
    argv = [*entrypoint, *(command or [])]
    if not argv:
        raise ValueError(f"container {container['name']}: neither it nor its image has a command")

    pod_security = pod["spec"].get("securityContext") or {}
    security = container.get("securityContext") or {}
    image_user = (config.get("User") or "0:0").split(":")
    uid = security.get("runAsUser", pod_security.get("runAsUser", int(image_user[0])))
    gid = security.get(
        "runAsGroup",
        pod_security.get("runAsGroup", int(image_user[1]) if len(image_user) > 1 else 0),
    )
    if not security.get("readOnlyRootFilesystem"):
        raise ValueError(
            f"container {container['name']}: this node runs every container of an image on "
            "one shared, read-only root; set securityContext.readOnlyRootFilesystem: true"
        )
    if (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")) and uid == 0:
        raise ValueError(f"container {container['name']}: runAsNonRoot, but it would run as root")
    groups = [g for g in [pod_security.get("fsGroup")] if g is not None]

    image_env = dict(e.split("=", 1) for e in config.get("Env") or [])
    process = spec["process"]
    process.update(
        terminal=False,
        args=argv,
        env=[f"{k}={v}" for k, v in {**image_env, **env}.items()],
        cwd=container.get("workingDir") or config.get("WorkingDir") or "/",
        user={"uid": uid, "gid": gid, "additionalGids": groups},
        noNewPrivileges=security.get("allowPrivilegeEscalation") is False,
        capabilities=_capabilities(security, process.get("capabilities") or {}),
    )
    process.pop("rlimits", None)
    spec["hostname"] = pod["metadata"]["name"][:63]
    # One unpacked root serves every container of the image: never written to.
    spec["root"] = {"path": str(image.rootfs), "readonly": True}
    spec["mounts"] = [
        *[m for m in spec["mounts"] if m["destination"] not in {x.target for x in mounts}],
        *[
            {
                "destination": m.target,
                "type": "bind",
                "source": str(m.source),
                "options": ["rbind", "ro" if m.read_only else "rw"],
            }
            for m in mounts
        ],
    ]
    linux = spec["linux"]
    linux.pop("resources", None)
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
    return spec


def run_in_image(
    image: Image, argv: list[str], scratch: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One command in a fresh container of the image (as its own user), its output back."""
    bundle = scratch / f"run-{image.name}-{len(list(scratch.glob('run-*')))}"
    bundle.mkdir(parents=True)
    pod = {"metadata": {"name": bundle.name}, "spec": {}}
    container = {
        "name": "run",
        "command": argv,
        "securityContext": {"readOnlyRootFilesystem": True},
    }
    tmp = bundle / "tmp"
    tmp.mkdir(mode=0o777)
    tmp.chmod(0o777)
    spec = runtime_spec(image, pod, container, {}, [Mount(tmp, "/tmp", False)])
    (bundle / "config.json").write_text(json.dumps(spec))
    return subprocess.run(
        ["runc", "--root", str(scratch / "runc"), "run", "--bundle", str(bundle), bundle.name],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
