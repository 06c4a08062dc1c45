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

import datetime
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.config import new_client_from_config

from tests.kube_harness.image_store import ImageRefused, RegistryImages
from tests.kube_harness.pod_inputs import PodInputs
from tests.kube_harness.pod_status import pod_status, refused_image_status, terminated

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
        bind_pending: bool = True,
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
        # Whether it binds every pending pod to its node (no scheduler runs). The load bench
        # binds pods itself, some to simulated nodes: then the agent lists only its own.
        self.bind_pending = bind_pending
        self.runs: dict[str, PodRun] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        # The claims' folders are looked up on the agent at each use (a test may repoint them).
        self.inputs = PodInputs(
            self.api,
            self.node,
            self.server,
            self.ca_file,
            pod_ip,
            lambda ns, claim: self.claim_dir(ns, claim),
            images,
        )

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
        if self.bind_pending:
            pods = self.api.list_pod_for_all_namespaces().items
        else:
            pods = self.api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node}"
            ).items
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
            volumes = self.inputs.volumes(pod, scratch)
            for init, specs in (
                (True, pod.spec.init_containers or []),
                (False, pod.spec.containers),
            ):
                for c in specs:
                    try:
                        runtime, image_id = (
                            self.inputs.runtime(pod, c, volumes, scratch)
                            if self.images
                            else (None, "")
                        )
                    except ImageRefused as e:
                        self._refuse_image(pod, c.name, e)
                        return None
                    (run.init_containers if init else run.containers).append(
                        ContainerRun(
                            c.name,
                            [] if runtime else self.inputs.argv(c, volumes),
                            self.inputs.env(pod, c),
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
            c.last_terminated = terminated(c)
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

    def _report(self, run: PodRun) -> None:
        status = pod_status(run, self.pod_ip)
        comparable = {k: v for k, v in status.items() if k != "conditions"}
        if comparable == run.reported:
            return
        try:
            self.api.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
            run.reported = comparable
        except ApiException as e:
            if e.status != 404:
                raise


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]
