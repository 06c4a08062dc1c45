"""The node agent's images, pulled from a registry and verified before anything runs.

What a kubelet with a signature policy does (CRI-O's ``signature_policy``, or containerd with
a verifier), for each container a pod starts:

1. resolve the reference to a manifest digest at the registry (a tag can move; the digest is
   what was signed, and what runs);
2. verify that digest's cosign signature with the site's trusted public key: a missing or
   wrong signature refuses the image (``SignatureValidationFailed``, as CRI-O reports it);
3. pull that digest (skopeo checks every blob against the digest it is named by, so a layer
   changed at the registry fails the pull: ``ErrImagePull``) and unpack it with umoci into an
   OCI bundle that runc starts.

Unpacked images are kept by digest, as a node keeps its images between pods, in a store
outside the repository (the engine is GBs); a tag that now names another digest is verified
and pulled again. The bundle each repository used last is kept, older ones deleted.
The tests that look inside the images they built unpack them into the same store
(``ImageStore.unpacked``), so one digest is unpacked once on a machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.kube_harness.containers import BuiltImage, Image, without_tag
from tests.kube_harness.oci_layout import config_blob, manifest_digest

# The engine is 5.8 GB unpacked: a node keeps the last digest of each repository it used.
KEEP_PER_REPOSITORY = 1
# The machine's store: outside the repository, beside the other built tools.
MACHINE_STORE = (
    Path(os.environ.get("FEDKUBE_TOOLS_CACHE", Path.home() / ".cache" / "fedkube-tools"))
    / "node-images"
)


class ImageRefused(Exception):
    """A container's image cannot run: the pod's status says why (reason, message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def split_reference(reference: str) -> tuple[str, str, str]:
    """registry, repository path, and tag or digest ("@sha256:..." kept with its @)."""
    name = without_tag(reference)
    tag = reference[len(name) :].removeprefix(":") or "latest"
    registry, _, path = name.partition("/")
    if not path or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise ImageRefused(
            "InvalidImageName",
            f"{reference!r} names no registry; this node pulls only from its registries "
            "(set the chart's image.registry or global.imageRegistry)",
        )
    return registry, path, tag


class ImageStore:
    """Unpacked images by digest, shared by every node agent and test on this machine."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.pulls: list[str] = []  # digests unpacked (not found in the store), for the tests

    def bundle_of(self, path: str, digest: str) -> Path:
        return self.store / "bundles" / f"{path.replace('/', '-')}-{digest.split(':')[1][:24]}"

    def unpacked(self, built: BuiltImage) -> Image:
        """An image the build left as a layout, unpacked (the same bundle a pull of its
        digest would make)."""
        digest = manifest_digest(built.oci)
        path = without_tag(built.reference).removeprefix("localhost/")

        def unpack(bundle: Path) -> None:
            self._unpack(built.reference, built.oci, built.tag, digest, bundle)

        return Image(built.name, built.reference, self._keep(path, digest, unpack))

    def _keep(self, path: str, digest: str, make: Callable[[Path], None]) -> Path:
        bundle = self.bundle_of(path, digest)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        with (self.store / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one unpack at a time on this machine
            # (A bundle from an older store lacks its size: it is unpacked again.)
            if not (bundle / ".complete").exists() or not (bundle / "rootfs-bytes").exists():
                shutil.rmtree(bundle, ignore_errors=True)
                make(bundle)
                self.pulls.append(digest)
            os.utime(bundle)
            self._prune(path, keep=bundle)
        return bundle

    def _unpack(self, reference: str, layout: Path, tag: str, digest: str, bundle: Path) -> None:
        partial = bundle.with_name(bundle.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            unpacked = subprocess.run(
                ["umoci", "unpack", "--image", f"{layout}:{tag}", str(partial)],
                capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            if unpacked.returncode != 0:
                raise ImageRefused("ErrImagePull", f"{reference}: {_last_line(unpacked.stderr)}")
            (partial / "image.json").write_bytes(config_blob(layout))
            (partial / "digest").write_text(digest)
            files = (partial / "rootfs").rglob("*")
            size = sum(f.lstat().st_size for f in files if f.is_file() and not f.is_symlink())
            (partial / "rootfs-bytes").write_text(str(size))
            (partial / ".complete").touch()
            partial.rename(bundle)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _prune(self, path: str, keep: Path) -> None:
        prefix = path.replace("/", "-") + "-"
        mine = [
            b for b in (self.store / "bundles").iterdir()
            if b.name.startswith(prefix) and len(b.name) == len(prefix) + 24
        ]  # fmt: skip
        mine.sort(key=lambda b: b.stat().st_mtime, reverse=True)
        for old in [b for b in mine if b != keep][KEEP_PER_REPOSITORY - 1 :]:
            shutil.rmtree(old, ignore_errors=True)


class RegistryImages(ImageStore):
    def __init__(
        self,
        store: Path,
        cosign: Path,
        public_key: Path,
        plain_http: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(store)
        self.cosign = cosign
        self.public_key = public_key
        # Registries this node reaches over plain HTTP (the tests' registry, on loopback).
        self.plain_http = plain_http

    def image(self, reference: str) -> Image:
        registry, path, tag = split_reference(reference)
        repository = f"{registry}/{path}"
        digest = tag[1:] if tag.startswith("@") else self._resolve(reference, registry)
        pinned = f"{repository}@{digest}"
        self._verify(reference, pinned, registry)

        def pull(bundle: Path) -> None:
            self._pull(reference, pinned, registry, digest, bundle)

        return Image(path.rsplit("/", 1)[-1], reference, self._keep(path, digest, pull))

    # -- the three steps ------------------------------------------------------------------

    def _tls(self, registry: str) -> str:
        return "false" if registry in self.plain_http else "true"

    def _resolve(self, reference: str, registry: str) -> str:
        out = subprocess.run(
            ["skopeo", "inspect", "--raw", f"--tls-verify={self._tls(registry)}",
             f"docker://{reference}"],
            capture_output=True, timeout=120,
        )  # fmt: skip
        if out.returncode != 0:
            raise ImageRefused(
                "ErrImagePull", f"{reference}: {_last_line(out.stderr.decode(errors='replace'))}"
            )
        manifest = json.loads(out.stdout)
        if "manifests" in manifest:
            raise ImageRefused(
                "ErrImagePull", f"{reference} is an index; name the platform's manifest by digest"
            )
        return "sha256:" + hashlib.sha256(out.stdout).hexdigest()

    def _verify(self, reference: str, pinned: str, registry: str) -> None:
        argv = [
            str(self.cosign), "verify", "--key", str(self.public_key),
            # Key-based signatures with no transparency log: the tests run offline.
            "--insecure-ignore-tlog=true", "--output", "json", pinned,
        ]  # fmt: skip
        if registry in self.plain_http:
            argv.insert(2, "--allow-http-registry")
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=120,
            env={**os.environ, "TUF_ROOT": str(self.store / "tuf")},
        )  # fmt: skip
        if out.returncode != 0:
            raise ImageRefused(
                "SignatureValidationFailed",
                f"image {reference} ({pinned.split('@')[1]}) is refused: no valid signature by "
                f"this node's trusted key {self.public_key.name} ({_last_line(out.stderr)})",
            )

    def _pull(self, reference: str, pinned: str, registry: str, digest: str, bundle: Path) -> None:
        layout = bundle.with_name(bundle.name + ".layout")
        shutil.rmtree(layout, ignore_errors=True)
        try:
            copied = subprocess.run(
                ["skopeo", "copy", "--quiet", f"--src-tls-verify={self._tls(registry)}",
                 f"docker://{pinned}", f"oci:{layout}:image"],
                capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            if copied.returncode != 0:
                raise ImageRefused("ErrImagePull", f"{reference}: {_last_line(copied.stderr)}")
            self._unpack(reference, layout, "image", digest, bundle)
        finally:
            shutil.rmtree(layout, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-400:] if lines else "no output"
