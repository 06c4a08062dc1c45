"""Reading an image in an OCI layout (its manifest's digest, its config), and changing one as
an attacker with push rights would: one layer's files altered, the config and manifest
rewritten to match (a new, valid, unsigned digest)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _put(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob_path(layout, digest).write_bytes(data)
    return digest


def _load(layout: Path, digest: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_blob_path(layout, digest).read_bytes())
    return loaded


def manifest_digest(layout: Path) -> str:
    """The digest of the layout's (first) image manifest: what a registry serves it by."""
    return str(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])


def config_blob(layout: Path) -> bytes:
    """The image's OCI config, as stored (what umoci reads to make the runtime spec)."""
    manifest = _load(layout, manifest_digest(layout))
    return _blob_path(layout, manifest["config"]["digest"]).read_bytes()


def with_last_layer_changed(source: Path, target: Path, tag: str, note: bytes) -> str:
    """Copies the layout at source to target (tag: the image's tag in both) with every
    regular file of its last layer ending in note; returns the new manifest's digest."""
    shutil.copytree(source, target)
    index = json.loads((target / "index.json").read_text())
    entry = next(
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )
    manifest = _load(target, entry["digest"])
    layer = manifest["layers"][-1]
    original = gzip.decompress(_blob_path(target, layer["digest"]).read_bytes())
    changed = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(original)) as old,
        tarfile.open(fileobj=changed, mode="w", format=tarfile.PAX_FORMAT) as new,
    ):
        altered = 0
        for member in old:
            data = old.extractfile(member) if member.isfile() else None
            if data is None:
                new.addfile(member)
                continue
            content = data.read() + note
            member.size = len(content)
            new.addfile(member, io.BytesIO(content))
            altered += 1
    if altered == 0:
        raise ValueError(f"the last layer of {source}:{tag} has no file to change")
    diff_id = "sha256:" + hashlib.sha256(changed.getvalue()).hexdigest()
    compressed = gzip.compress(changed.getvalue(), mtime=0)
    layer.update(digest=_put(target, compressed), size=len(compressed))
    config = _load(target, manifest["config"]["digest"])
    config["rootfs"]["diff_ids"][-1] = diff_id
    config_bytes = json.dumps(config).encode()
    manifest["config"].update(digest=_put(target, config_bytes), size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    entry.update(digest=_put(target, manifest_bytes), size=len(manifest_bytes))
    (target / "index.json").write_text(json.dumps(index))
    return str(entry["digest"])
