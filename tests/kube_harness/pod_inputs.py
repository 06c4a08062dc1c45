"""What the node agent gives a pod's container, as kubelet would: its volumes (host folders,
ConfigMap and Secret files, claims), its environment, its ServiceAccount token, and how it
starts: a process in a mount namespace of its own, or (container mode) a runc bundle from its
verified image."""

from __future__ import annotations

import base64
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.kube_harness.containers import SERVICE_ACCOUNT_DIR, Mount, runtime_spec
from tests.kube_harness.image_store import RegistryImages

# Host folders every container needs as they are: the checkout (an editable install points
# into it) and the Python installation running the tests.
KEEP_VISIBLE = [str(Path(__file__).resolve().parents[2]), sys.prefix, sys.base_prefix]
# Where those are bound aside while volumes are mounted (private to each container's mounts).
AGENT_STASH = "/run/fedkube-node-agent"


class PodInputs:
    def __init__(
        self,
        api: client.CoreV1Api,
        node: str,
        server: str,
        ca_file: str,
        pod_ip: str,
        claim_dir: Callable[[str, str], Path],
        images: RegistryImages | None,
    ) -> None:
        self.api = api
        self.node = node
        self.server = server  # https://127.0.0.1:PORT
        self.ca_file = ca_file
        self.pod_ip = pod_ip
        self.claim_dir = claim_dir
        self.images = images

    def volumes(self, pod: Any, scratch: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        ns = pod.metadata.namespace
        fs_group = (pod.spec.security_context or client.V1PodSecurityContext()).fs_group
        for v in pod.spec.volumes or []:
            path = scratch / "volumes" / v.name
            if v.empty_dir is not None or v.projected is not None:
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)  # as kubelet makes an emptyDir: any user of the pod writes
            elif v.host_path is not None:
                path = Path(v.host_path.path)
                path.mkdir(parents=True, exist_ok=True)
            elif v.persistent_volume_claim is not None:
                path = self.claim_dir(ns, v.persistent_volume_claim.claim_name)
                path.mkdir(parents=True, exist_ok=True)
                if fs_group is not None:
                    _own_by_group(path, fs_group)
            elif v.config_map is not None:
                cm = self.api.read_namespaced_config_map(v.config_map.name, ns)
                self.write_items(
                    path, cm.data or {}, v.config_map.items, v.config_map.default_mode, fs_group
                )
            elif v.secret is not None:
                secret = self.api.read_namespaced_secret(v.secret.secret_name, ns)
                data = {k: base64.b64decode(b) for k, b in (secret.data or {}).items()}
                self.write_items(path, data, v.secret.items, v.secret.default_mode, fs_group)
            else:
                raise ValueError(f"volume {v.name}: this node agent does not support its kind")
            out[v.name] = path
        return out

    @staticmethod
    def write_items(
        folder: Path,
        data: dict[str, Any],
        items: Any,
        mode: int | None = None,
        group: int | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        chosen = {i.key: i.path for i in items} if items else {k: k for k in data}
        for key, rel in chosen.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            value = data[key]
            target.write_bytes(value if isinstance(value, bytes) else str(value).encode())
            # As kubelet writes them: defaultMode (0644 unless set), the pod's fsGroup.
            target.chmod(0o644 if mode is None else mode)
            if group is not None:
                os.chown(target, -1, group)

    def argv(self, c: Any, volumes: dict[str, Path]) -> list[str]:
        argv = [*(c.command or []), *(c.args or [])]
        if not argv:
            raise ValueError(f"container {c.name}: no command; this node agent has no images")
        mounts = []
        for m in c.volume_mounts or []:
            source = volumes[m.name] / m.sub_path if m.sub_path else volumes[m.name]
            if m.sub_path and not source.exists():
                source.mkdir(parents=True)  # as kubelet makes a missing subPath
            mounts.append((source, m.mount_path, bool(m.read_only)))
        if not mounts:
            return argv
        # A mount over a folder that holds another volume's host folder (/tmp, say) would
        # hide it: such mounts go last.
        sources = [str(m[0]) for m in mounts]  # (a list reads as empty while it sorts)
        mounts.sort(key=lambda m: any(src.startswith(m[1].rstrip("/") + "/") for src in sources))
        steps = []
        # The host's own code (this checkout, the Python it runs) must stay visible in the
        # container, even when a volume covers the folder it lies in (a clone under /tmp and
        # the pod's /tmp emptyDir): bind it aside first, and back in place after the mounts.
        hidden = [
            keep
            for keep in dict.fromkeys(KEEP_VISIBLE)
            if any(keep.startswith(m[1].rstrip("/") + "/") for m in mounts)
        ]
        aside = [f"{AGENT_STASH}/{i}" for i in range(len(hidden))]
        for keep, stash in zip(hidden, aside, strict=True):
            steps.append(f"mkdir -p {stash} && mount --bind {shlex.quote(keep)} {stash}")
        for source, target, read_only in mounts:
            make = "touch" if source.is_file() else "mkdir -p"
            steps.append(f"{make} {shlex.quote(target)}")
            steps.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}")
            if read_only:
                steps.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        for keep, stash in zip(hidden, aside, strict=True):
            steps.append(
                f"mkdir -p {shlex.quote(keep)} && mount --bind {stash} {shlex.quote(keep)}"
            )
        script = " && ".join(steps) + ' && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            "sh",
            *argv,
        ]

    def runtime(
        self, pod: Any, c: Any, volumes: dict[str, Path], scratch: Path
    ) -> tuple[dict[str, Any], str]:
        """Container mode: the container's runtime spec, from its verified image and the pod,
        and the image's repository@digest."""
        assert self.images is not None
        image = self.images.image(c.image or "")
        mounts = [
            Mount(volumes[m.name] / m.sub_path if m.sub_path else volumes[m.name],
                  m.mount_path, bool(m.read_only))
            for m in c.volume_mounts or []
        ]  # fmt: skip
        for m in mounts:
            if not m.source.exists():
                m.source.mkdir(parents=True)  # as kubelet makes a missing subPath
        token = self.service_account_folder(pod, scratch)
        if token is not None and SERVICE_ACCOUNT_DIR not in {m.target for m in mounts}:
            mounts.append(Mount(token, SERVICE_ACCOUNT_DIR, True))
        mounts += [Mount(Path(f), f, True) for f in ("/etc/hosts", "/etc/resolv.conf")]
        mounts.sort(key=lambda m: m.target.rstrip("/").count("/"))  # a folder before its insides
        sanitize = self.api.api_client.sanitize_for_serialization
        spec = runtime_spec(image, sanitize(pod), sanitize(c), self.env(pod, c), mounts)
        return spec, image.image_id

    def service_account_folder(self, pod: Any, scratch: Path) -> Path | None:
        """The token, CA and namespace that the ServiceAccount admission plugin and kubelet
        give a pod (the plugin is off here: it would refuse pods in namespaces whose default
        ServiceAccount is not made yet); None when the pod opts out."""
        if pod.spec.automount_service_account_token is False:
            return None
        account = pod.spec.service_account_name or "default"
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=4 * 3600)
        )
        token = self.api.create_namespaced_service_account_token(
            account, pod.metadata.namespace, request
        ).status.token
        folder = scratch / "serviceaccount"
        self.write_items(
            folder,
            {
                "token": token,
                "ca.crt": Path(self.ca_file).read_bytes(),
                "namespace": pod.metadata.namespace,
            },
            None,
            0o644,
            None,
        )
        return folder

    def env(self, pod: Any, c: Any) -> dict[str, str]:
        ns = pod.metadata.namespace
        host, _, port = self.server.removeprefix("https://").partition(":")
        env = {
            "HOSTNAME": pod.metadata.name,
            # In-cluster clients find the API server here (pods share the host's loopback).
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port or "443",
        }
        if self.images is None:  # a process: the tests' Python, on the host's PATH
            env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
            env["HOME"] = os.environ.get("HOME", "/root")
        for src in c.env_from or []:
            prefix = src.prefix or ""
            if src.config_map_ref is not None:
                cm = self.api.read_namespaced_config_map(src.config_map_ref.name, ns)
                env.update({prefix + k: v for k, v in (cm.data or {}).items()})
            if src.secret_ref is not None:
                s = self.api.read_namespaced_secret(src.secret_ref.name, ns)
                env.update(
                    {prefix + k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
                )
        for e in c.env or []:
            if e.value_from is None:
                env[e.name] = e.value or ""
                continue
            vf = e.value_from
            if vf.config_map_key_ref is not None:
                cm = self.api.read_namespaced_config_map(vf.config_map_key_ref.name, ns)
                env[e.name] = (cm.data or {})[vf.config_map_key_ref.key]
            elif vf.secret_key_ref is not None:
                s = self.api.read_namespaced_secret(vf.secret_key_ref.name, ns)
                env[e.name] = base64.b64decode((s.data or {})[vf.secret_key_ref.key]).decode()
            elif vf.field_ref is not None:
                env[e.name] = {
                    "metadata.name": pod.metadata.name,
                    "metadata.namespace": ns,
                    "metadata.uid": pod.metadata.uid,
                    "spec.nodeName": self.node,
                    "status.podIP": self.pod_ip,
                    "status.hostIP": "127.0.0.1",
                }.get(vf.field_ref.field_path, "")
        return env


def _own_by_group(folder: Path, gid: int) -> None:
    """As kubelet applies a pod's fsGroup to a volume: group-owned, group-writable, new files
    inheriting the group."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, -1, gid, follow_symlinks=False)
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = 0o2070 if path.is_dir() else (0o060 | (0o010 if mode & 0o100 else 0))
        path.chmod((mode & 0o7777) | extra)
