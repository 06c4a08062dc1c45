"""The parts of the load run (``load.py``): KWOK's simulated node, a binder standing in for
the scheduler, and the probes: when each job's pods appeared, how far the jobs' status trails
their aggregators, the operator's CPU, memory, API requests (the API server's audit log) and
reconcile counters."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fedkube.transport.progress_client import fetch_progress
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.config import new_client_from_config

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.operator_env import NAMESPACE, SERVICE_ACCOUNT
from tests.support.tools import build_output
from tests.support.waiting import terminate

KWOK_NODE = "kwok-node-0"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


def kwok_binary() -> Path:
    return Path(build_output("build-kwok.sh", "KWOK")[-1])


def audit_args(folder: Path) -> list[str]:
    """kube-apiserver flags that log each request the operator makes, once, when it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    policy = folder / "audit-policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
        "omitStages: [RequestReceived, ResponseStarted]\n"
        f"rules:\n- level: Metadata\n  users: [{json.dumps(OPERATOR_USER)}]\n- level: None\n"
    )
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={folder / 'audit.log'}",
        "--audit-log-maxsize=2000",
        "--audit-log-mode=batch",
        "--audit-log-batch-max-wait=1s",
    ]


def operator_requests(audit_log: Path, since: float, until: float) -> Counter[str]:
    """The operator's API requests that ended between two wall-clock times, by verb and
    resource (e.g. ``list pods``)."""
    counts: Counter[str] = Counter()
    if not audit_log.exists():
        return counts
    for line in audit_log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        stamp = _epoch(event.get("stageTimestamp", ""))
        if since <= stamp <= until:
            ref = event.get("objectRef") or {}
            what = ref.get("resource", "?") + (
                f"/{ref['subresource']}" if "subresource" in ref else ""
            )
            counts[f"{event.get('verb', '?')} {what}"] += 1
    return counts


def _epoch(stamp: str) -> float:
    if not stamp:
        return 0.0
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Kwok:
    """KWOK managing one simulated node: the pods bound to it are reported Running (with an
    address from its own range) and nothing runs."""

    cp: ControlPlane
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Kwok:
        api = client.CoreV1Api(new_client_from_config(str(self.cp.kubeconfig)))
        node = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=KWOK_NODE,
                labels={"type": "kwok", "kubernetes.io/hostname": KWOK_NODE},
                annotations={"kwok.x-k8s.io/node": "fake"},
            ),
            status=client.V1NodeStatus(
                allocatable={"cpu": "1000", "memory": "4Ti", "pods": "5000"},
                capacity={"cpu": "1000", "memory": "4Ti", "pods": "5000"},
            ),
        )
        try:
            api.create_node(node)
        except ApiException as e:
            if e.status != 409:
                raise
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "kwok.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                str(kwok_binary()),
                f"--kubeconfig={self.cp.kubeconfig}",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.64.0.0/16",
                "--node-ip=10.63.0.1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        terminate(self.proc)


class Binder(threading.Thread):
    """Plays the scheduler: binds each pending pod to the node agent's node when its
    namespace is in ``real``, else to the simulated node."""

    def __init__(self, cp: ControlPlane, real: Iterable[str], real_node: str) -> None:
        super().__init__(name="binder", daemon=True)
        self.api = client.CoreV1Api(new_client_from_config(str(cp.kubeconfig)))
        self.real = set(real)
        self.real_node = real_node
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                pending = self.api.list_pod_for_all_namespaces(field_selector="spec.nodeName=")
                for pod in pending.items:
                    ns = pod.metadata.namespace
                    node = self.real_node if ns in self.real else KWOK_NODE
                    body = client.V1Binding(
                        metadata=client.V1ObjectMeta(name=pod.metadata.name),
                        target=client.V1ObjectReference(kind="Node", name=node),
                    )
                    self.api.create_namespaced_pod_binding(
                        pod.metadata.name, ns, body, _preload_content=False
                    )
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
            self.stopping.wait(0.2)


class PodClock(threading.Thread):
    """When each job and each of its pods were first seen (watches, wall-clock times)."""

    def __init__(self, cp: ControlPlane) -> None:
        super().__init__(name="pod-clock", daemon=True)
        api_client = new_client_from_config(str(cp.kubeconfig))
        self.api = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.created: dict[tuple[str, str], float] = {}
        self.jobs: dict[tuple[str, str], str] = {}
        self.job_seen: dict[tuple[str, str], float] = {}
        self.stopping = threading.Event()

    def _watch_jobs(self) -> None:
        while not self.stopping.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.custom.list_cluster_custom_object,
                    "fedkube.io",
                    "v1alpha1",
                    "federatedjobs",
                    timeout_seconds=5,
                ):
                    meta = event["object"]["metadata"]
                    self.job_seen.setdefault((meta["namespace"], meta["name"]), time.time())
            except Exception:  # a dropped watch is started again
                time.sleep(0.2)

    def run(self) -> None:
        threading.Thread(target=self._watch_jobs, name="job-clock", daemon=True).start()
        while not self.stopping.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.api.list_pod_for_all_namespaces,
                    label_selector="fedkube.io/job",
                    timeout_seconds=5,
                ):
                    pod = event["object"]
                    key = (pod.metadata.namespace, pod.metadata.name)
                    self.created.setdefault(key, time.time())
                    self.jobs[key] = pod.metadata.labels.get("fedkube.io/job", "")
            except Exception:  # a dropped watch is started again
                time.sleep(0.2)

    def job_times(self, pods_per_job: int) -> dict[tuple[str, str], tuple[float, float]]:
        """For each job with all its pods: (when it was first seen, when its last pod was)."""
        by_job: dict[tuple[str, str], list[float]] = {}
        for key, t in list(self.created.items()):
            by_job.setdefault((key[0], self.jobs[key]), []).append(t)
        return {
            j: (self.job_seen.get(j, min(ts)), max(ts))
            for j, ts in by_job.items()
            if len(ts) >= pods_per_job
        }


@dataclass
class Lag:
    """When each round closed at a job's aggregator and when the job's status first showed
    that round or a later one (a status can skip rounds that close faster than it is
    written)."""

    at_aggregator: dict[int, float] = field(default_factory=dict)
    in_status: list[tuple[float, int]] = field(default_factory=list)

    def seconds(self) -> list[float]:
        out = []
        for r, t in sorted(self.at_aggregator.items()):
            shown = [when for when, seen in self.in_status if seen >= r]
            if r > 0 and shown:
                out.append(max(0.0, min(shown) - t))
        return out


class LagWatch(threading.Thread):
    """Polls the sampled jobs' aggregators (/progress) and their status four times a second."""

    def __init__(
        self, cp: ControlPlane, jobs: dict[tuple[str, str], tuple[int, str]], every: float = 0.25
    ) -> None:
        super().__init__(name="lag-watch", daemon=True)
        self.api = client.CustomObjectsApi(new_client_from_config(str(cp.kubeconfig)))
        self.jobs = jobs  # (namespace, name) -> (httpPort, /progress token)
        self.lags = {j: Lag() for j in jobs}
        self.every = every
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for (ns, name), (port, token) in self.jobs.items():
                lag = self.lags[(ns, name)]
                progress = fetch_progress(
                    f"http://127.0.0.1:{port}/progress", timeout=1, token=token
                )
                if progress is not None:
                    lag.at_aggregator.setdefault(progress.round, time.time())
                try:
                    job = self.api.get_namespaced_custom_object(
                        "fedkube.io", "v1alpha1", ns, "federatedjobs", name
                    )
                except ApiException:
                    continue
                status_round = job.get("status", {}).get("round")
                if status_round is not None:
                    lag.in_status.append((time.time(), int(status_round)))
            self.stopping.wait(self.every)


class ProcessSampler(threading.Thread):
    """A process's CPU time and resident memory, once a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(name=f"sampler-{pid}", daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (wall, cpu seconds, RSS KiB)
        self.stopping = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stopping.is_set():
            try:
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick
                rss = next(
                    int(line.split()[1])
                    for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
                self.samples.append((time.time(), cpu, rss))
            except (OSError, StopIteration):
                pass
            self.stopping.wait(1.0)

    def cpu_cores(self, since: float, until: float) -> float:
        """Mean CPU use between two wall-clock times, in cores."""
        inside = [s for s in self.samples if since <= s[0] <= until]
        if len(inside) < 2:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def peak_rss_mib(self) -> float:
        return max((s[2] for s in self.samples), default=0) / 1024


def operator_counters(metrics_text: str) -> dict[str, float]:
    """Reconciles, the seconds they took and those that raised, from the operator's /metrics."""
    names = {
        "fedkube_reconcile_errors_total": "errors",
        "fedkube_reconcile_duration_seconds_count": "reconciles",
        "fedkube_reconcile_duration_seconds_sum": "seconds",
    }
    out = dict.fromkeys(names.values(), 0.0)
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            out[names[name]] = float(value)
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
