"""A test-only node agent that plays kubelet without a container runtime.

It registers a Node, binds pending pods to it (no scheduler runs), runs each container's
command and args as a local process with the pod's environment, maps volumes to host
folders, reports phase, conditions, pod IP (loopback) and container statuses with exit
codes, honours restartPolicy, and kills the processes when the pod is deleted. Pods share
the host's network on loopback.

Volumes are real: each container runs in its own mount namespace (``unshare``, as root)
where every volume's host folder is bind-mounted at its ``mountPath``, so a container
sees its files where the manifest says.

Given a registry to pull from (``image_store.RegistryImages``), the agent runs in container
mode instead: each container's image is verified (its cosign signature, by the node's trusted
key) and pulled, and the container starts from it with runc, as the pod's user, on a
read-only root, with its volumes and ServiceAccount token bind-mounted (see ``containers``).
An image refused or not pulled leaves the pod Pending with the reason in its status, tried
again after a back-off, as kubelet does.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.config import new_client_from_config

from tests.kube_harness.containers import SERVICE_ACCOUNT_DIR, Mount, runtime_spec
from tests.kube_harness.image_store import ImageRefused, RegistryImages
from tests.kube_harness.pod_status import refused_image_status

# Host folders every container needs as they are: the checkout (an editable install points
# into it) and the Python installation running the tests.
KEEP_VISIBLE = [str(Path(__file__).resolve().parents[2]), sys.prefix, sys.base_prefix]
# Where those are bound aside while volumes are mounted (private to each container's mounts).
AGENT_STASH = "/run/fedkube-node-agent"
# How long a pod whose image was refused waits before it is tried again (kubelet backs off
# from 10 s up).
IMAGE_BACKOFF_SECONDS = 10.0

log = logging.getLogger("node-agent")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRun:
    name: str
    argv: list[str]
    env: dict[str, str]
    image: str = ""
    image_id: str = ""  # container mode: repository@digest of what runs, as kubelet reports
    workdir: str | None = None
    init: bool = False
    log: Path | None = None
    # terminationMessagePolicy FallbackToLogsOnError: a failure's message is the log's tail.
    fallback_to_logs: bool = False
    message: str = ""
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    last_terminated: dict[str, Any] | None = None
    restart_at: float = 0.0
    # Container mode: the runtime spec each start writes to a bundle of its own.
    runtime: dict[str, Any] | None = None
    runc_id: str = ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    pod: Any
    scratch: Path
    containers: list[ContainerRun] = field(default_factory=list)
    init_containers: list[ContainerRun] = field(default_factory=list)
    start_time: str = field(default_factory=now)
    reported: dict[str, Any] | None = None
    killed: bool = False


class NodeAgent:
    def __init__(
        self,
        kubeconfig: Path,
        root: Path,
        node_name: str = "fedkube-test-node",
        claim_dir: Callable[[str, str], Path] | None = None,
        poll_seconds: float = 0.2,
        images: RegistryImages | None = None,
        pod_ip: str = "127.0.0.1",
    ) -> None:
        api_client = new_client_from_config(str(kubeconfig))
        self.api = client.CoreV1Api(api_client)
        self.server = api_client.configuration.host  # https://127.0.0.1:PORT
        self.ca_file = api_client.configuration.ssl_ca_cert
        # Container mode: where images come from (None: every container is a process).
        self.images = images
        self.runc_root = root / "runc"
        # Pods share the host's network. Their address is loopback unless the API server must
        # reach them (its pod proxy refuses loopback): then one of the host's own addresses.
        self.pod_ip = pod_ip
        # Pods whose image was refused: uid -> when to try again.
        self._image_backoff: dict[str, float] = {}
        self.root = root
        self.node = node_name
        self.claim_dir = claim_dir or (lambda ns, claim: root / "claims" / ns / claim)
        self.poll = poll_seconds
        self.runs: dict[str, PodRun] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # -- life of the agent ---------------------------------------------------------------

    def start(self) -> NodeAgent:
        self.root.mkdir(parents=True, exist_ok=True)
        node = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=self.node,
                labels={"kubernetes.io/hostname": self.node, "fedkube.io/test-node": "true"},
            )
        )
        try:
            self.api.create_node(node)
        except ApiException as e:
            if e.status != 409:
                raise
        self.api.patch_node_status(
            self.node,
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "fedkube test node agent",
                            "lastHeartbeatTime": now(),
                            "lastTransitionTime": now(),
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node},
                    ],
                    "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
                    "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"},
                }
            },
        )
        self._thread = threading.Thread(target=self._loop, name=f"agent-{self.node}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for run in list(self.runs.values()):
            self._kill(run, grace=2)

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        return self.root / "logs" / namespace / pod / f"{container}.log"

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        folder = self.root / "logs" / namespace / pod
        files = [folder / f"{container}.log"] if container else sorted(folder.glob("*.log"))
        return "".join(f.read_text(errors="replace") for f in files if f.exists())

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as e:  # keep playing kubelet; the test sees the errors
                log.exception("node agent sync failed")
                self.errors.append(repr(e))
            self._stop.wait(self.poll)

    def _sync(self) -> None:
        pods = self.api.list_pod_for_all_namespaces().items
        seen = set()
        for pod in pods:
            uid = pod.metadata.uid
            if not pod.spec.node_name:
                self._bind(pod)
                continue
            if pod.spec.node_name != self.node:
                continue
            seen.add(uid)
            run = self.runs.get(uid)
            if pod.metadata.deletion_timestamp is not None:
                if run is not None:
                    self._kill(run, grace=min(5, pod.spec.termination_grace_period_seconds or 0))
                    self.runs.pop(uid, None)
                self._delete_now(pod)
                continue
            if run is None:
                if pod.status.phase in ("Succeeded", "Failed"):
                    continue
                if self._image_backoff.get(uid, 0.0) > time.monotonic():
                    continue
                run = self._admit(pod)
                if run is None:
                    continue
            run.pod = pod
            self._advance(run)
            self._report(run)
        for uid in list(self.runs):
            if uid not in seen:
                self._kill(self.runs.pop(uid), grace=0)

    def _bind(self, pod: Any) -> None:
        if pod.spec.scheduler_name not in (None, "default-scheduler"):
            return
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(kind="Node", name=self.node),
        )
        try:
            # The client cannot parse this call's reply (a Status); it is not needed.
            self.api.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def _delete_now(self, pod: Any) -> None:
        try:
            # The grace period goes in the body: a body's options override the query's.
            self.api.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=client.V1Preconditions(uid=pod.metadata.uid),
                ),
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    # -- starting pods ---------------------------------------------------------------------

    def _admit(self, pod: Any) -> PodRun | None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        scratch = self.root / "pods" / ns / name / pod.metadata.uid
        scratch.mkdir(parents=True, exist_ok=True)
        run = PodRun(pod.metadata.uid, ns, name, pod, scratch)
        try:
            volumes = self._volumes(pod, scratch)
            for init, specs in (
                (True, pod.spec.init_containers or []),
                (False, pod.spec.containers),
            ):
                for c in specs:
                    try:
                        runtime, image_id = (
                            self._runtime(pod, c, volumes, scratch) if self.images else (None, "")
                        )
                    except ImageRefused as e:
                        self._refuse_image(pod, c.name, e)
                        return None
                    (run.init_containers if init else run.containers).append(
                        ContainerRun(
                            c.name,
                            [] if runtime else self._argv(c, volumes),
                            self._env(pod, c),
                            runtime=runtime,
                            image=c.image or "",
                            image_id=image_id,
                            workdir=c.working_dir,
                            init=init,
                            log=self.log_path(ns, name, c.name),
                            fallback_to_logs=c.termination_message_policy
                            == "FallbackToLogsOnError",
                        )
                    )
        except ApiException as e:
            # A missing ConfigMap or Secret: like kubelet, wait and try again.
            log.info("pod %s/%s waits: %s", ns, name, e.reason)
            return None
        self._image_backoff.pop(run.uid, None)
        self.runs[run.uid] = run
        return run

    def _refuse_image(self, pod: Any, container: str, refused: ImageRefused) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        log.warning("pod %s/%s container %s: %s", ns, name, container, refused)
        self._image_backoff[pod.metadata.uid] = time.monotonic() + IMAGE_BACKOFF_SECONDS
        status = refused_image_status(
            self.api.api_client.sanitize_for_serialization(pod),
            container,
            refused.reason,
            refused.message,
            now(),
        )
        try:
            self.api.patch_namespaced_pod_status(name, ns, {"status": status})
        except ApiException as e:
            if e.status != 404:
                raise

    def _volumes(self, pod: Any, scratch: Path) -> dict[str, Path]:
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
                self._write_items(
                    path, cm.data or {}, v.config_map.items, v.config_map.default_mode, fs_group
                )
            elif v.secret is not None:
                secret = self.api.read_namespaced_secret(v.secret.secret_name, ns)
                data = {k: base64.b64decode(b) for k, b in (secret.data or {}).items()}
                self._write_items(path, data, v.secret.items, v.secret.default_mode, fs_group)
            else:
                raise ValueError(f"volume {v.name}: this node agent does not support its kind")
            out[v.name] = path
        return out

    @staticmethod
    def _write_items(
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

    def _argv(self, c: Any, volumes: dict[str, Path]) -> list[str]:
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

    def _runtime(
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
        token = self._service_account_folder(pod, scratch)
        if token is not None and SERVICE_ACCOUNT_DIR not in {m.target for m in mounts}:
            mounts.append(Mount(token, SERVICE_ACCOUNT_DIR, True))
        mounts += [Mount(Path(f), f, True) for f in ("/etc/hosts", "/etc/resolv.conf")]
        mounts.sort(key=lambda m: m.target.rstrip("/").count("/"))  # a folder before its insides
        sanitize = self.api.api_client.sanitize_for_serialization
        spec = runtime_spec(image, sanitize(pod), sanitize(c), self._env(pod, c), mounts)
        return spec, image.image_id

    def _service_account_folder(self, pod: Any, scratch: Path) -> Path | None:
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
        self._write_items(
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

    def _env(self, pod: Any, c: Any) -> dict[str, str]:
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

    # -- running containers ----------------------------------------------------------------

    def _launch(self, run: PodRun, c: ContainerRun) -> None:
        path = self.log_path(run.namespace, run.name, c.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        argv = c.argv
        if c.runtime is not None:
            c.runc_id = f"{run.uid[:13]}-{c.name}-{c.restarts}"
            bundle = run.scratch / "bundles" / c.runc_id
            bundle.mkdir(parents=True, exist_ok=True)
            (bundle / "config.json").write_text(json.dumps(c.runtime))
            argv = self._runc("run", "--bundle", str(bundle), c.runc_id)
        with open(path, "ab") as logf:
            c.proc = subprocess.Popen(
                argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=c.env,
                cwd=c.workdir or str(run.scratch),
                start_new_session=True,
            )
        c.started_at, c.finished_at, c.exit_code = now(), None, None

    def _advance(self, run: PodRun) -> None:
        if run.killed:
            return
        for c in run.init_containers:
            if c.exit_code == 0:
                continue
            self._step(run, c)
            return  # init containers run one at a time, in order
        for c in run.containers:
            self._step(run, c)

    def _step(self, run: PodRun, c: ContainerRun) -> None:
        policy = run.pod.spec.restart_policy or "Always"
        if c.proc is None:
            self._launch(run, c)
            return
        if c.exit_code is None:
            code = c.proc.poll()
            if code is None:
                return
            c.exit_code, c.finished_at = code, now()
            # A signal death shows as 128+n, as a container runtime reports it.
            if code < 0:
                c.exit_code = 128 - code
            if c.exit_code != 0 and c.fallback_to_logs and c.log is not None:
                # As kubelet does: the last 80 lines, at most 2 KiB.
                lines = c.log.read_text(errors="replace").splitlines()[-80:]
                c.message = "\n".join(lines)[-2048:]
        restart = (policy == "Always" and not c.init) or (policy != "Never" and c.exit_code != 0)
        if not restart:
            return
        if c.restart_at == 0.0:
            c.restart_at = time.monotonic() + min(10.0, 0.5 * 2**c.restarts)
        if time.monotonic() >= c.restart_at:
            c.last_terminated = self._terminated(c)
            c.restarts += 1
            c.restart_at = 0.0
            self._launch(run, c)

    def _runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.runc_root), *args]

    def _kill(self, run: PodRun, grace: float) -> None:
        run.killed = True
        live = [
            c for c in [*run.init_containers, *run.containers] if c.proc and c.proc.poll() is None
        ]
        for c in live:
            assert c.proc is not None
            # runc run, in the foreground, passes the signal on to the container's process.
            with _quiet():
                os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in live:
            assert c.proc is not None
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if c.runc_id:
                    subprocess.run(self._runc("kill", c.runc_id, "KILL"), capture_output=True)
                with _quiet():
                    os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait()
            if c.runc_id:
                subprocess.run(self._runc("delete", "--force", c.runc_id), capture_output=True)

    # -- reporting -------------------------------------------------------------------------

    @staticmethod
    def _terminated(c: ContainerRun) -> dict[str, Any]:
        return {
            "terminated": {
                "exitCode": c.exit_code,
                "reason": "Completed" if c.exit_code == 0 else "Error",
                "startedAt": c.started_at,
                "finishedAt": c.finished_at,
                **({"message": c.message} if c.message else {}),
            }
        }

    def _container_status(self, run: PodRun, c: ContainerRun) -> dict[str, Any]:
        if c.running:
            state: dict[str, Any] = {"running": {"startedAt": c.started_at}}
        elif c.exit_code is not None and c.restart_at == 0.0:
            state = self._terminated(c)
        elif c.exit_code is not None:
            state = {
                "waiting": {"reason": "CrashLoopBackOff", "message": f"exit code {c.exit_code}"}
            }
        else:
            state = {"waiting": {"reason": "PodInitializing"}}
        status = {
            "name": c.name,
            "image": c.image,
            "imageID": c.image_id,
            "ready": c.running,
            "started": c.running,
            "restartCount": c.restarts,
            "state": state,
            "containerID": (f"runc://{c.runc_id}" if c.runc_id else f"fedkube-test://{c.proc.pid}")
            if c.proc
            else None,
        }
        if c.last_terminated:
            status["lastState"] = c.last_terminated
        return status

    def _phase(self, run: PodRun) -> str:
        if any(c.exit_code != 0 for c in run.init_containers):
            failed = any(
                c.exit_code not in (None, 0) and c.restart_at == 0.0 for c in run.init_containers
            )
            return "Failed" if failed and run.pod.spec.restart_policy == "Never" else "Pending"
        cs = run.containers
        if any(c.running for c in cs) or any(c.restart_at for c in cs):
            return "Running"
        if all(c.exit_code is not None for c in cs):
            return "Succeeded" if all(c.exit_code == 0 for c in cs) else "Failed"
        return "Pending"

    def _report(self, run: PodRun) -> None:
        phase = self._phase(run)
        ready = phase == "Running" and all(c.running for c in run.containers)
        t = run.start_time

        def cond(kind: str, ok: bool) -> dict[str, Any]:
            return {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": t}

        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": run.start_time,
            "conditions": [
                cond("PodScheduled", True),
                cond("Initialized", all(c.exit_code == 0 for c in run.init_containers)),
                cond("ContainersReady", ready),
                cond("Ready", ready),
            ],
            "containerStatuses": [self._container_status(run, c) for c in run.containers],
            "initContainerStatuses": [self._container_status(run, c) for c in run.init_containers],
        }
        comparable = {k: v for k, v in status.items() if k != "conditions"}
        if comparable == run.reported:
            return
        try:
            self.api.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
            run.reported = comparable
        except ApiException as e:
            if e.status != 404:
                raise


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


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]
