"""Two operator replicas on the real control plane: the one holding the Lease reconciles, the
other stands by; the leader killed with SIGKILL mid-job, the standby takes the lease over
within 15 s, the job completes, and no pod is made twice."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import apply, example, pods, wait_job, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import NAMESPACE, OperatorProcess


def holder(cp: ControlPlane, lease: str) -> str | None:
    out = cp.kubectl("get", "lease", lease, "-n", NAMESPACE, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)["spec"].get("holderIdentity")


def uids(cp: ControlPlane, namespace: str, job: str) -> dict[str, str]:
    return {n: p["metadata"]["uid"] for n, p in pods(cp, namespace, job).items()}


def finished(cp: ControlPlane, namespace: str, job: str, log: Any) -> dict[str, Any]:
    """The job's status once it ended, Succeeded."""
    done = wait_job(
        cp, namespace, job, lambda s: s.get("phase") in ("Succeeded", "Failed"), timeout=300,
        log=log,
    )  # fmt: skip
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return dict(done["status"])


def leading(op: OperatorProcess) -> str | None:
    """The identity this replica leads as (in its latest life), from its log."""
    found = None
    for line in op.log(10**6).splitlines():
        if "leading as " in line:
            found = line.split("leading as ")[1].split()[0]
        elif "standing by as " in line:
            found = None
    return found


def test_the_standby_takes_over_within_15_s_and_the_job_completes(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    cp = control_plane
    lease = f"failover-{uuid.uuid4().hex[:6]}"
    args = (
        "--leader-election",
        f"--leader-election-namespace={NAMESPACE}",
        f"--leader-election-name={lease}",
    )
    operator.stop()  # the shared test operator makes way for the two replicas
    first = OperatorProcess(cp, tmp_path / "first", args)
    # The replicas share the release's key (the chart's Secret): the jobs' /progress tokens.
    (tmp_path / "second").mkdir()
    shutil.copy(tmp_path / "first" / "progress-key", tmp_path / "second" / "progress-key")
    second = OperatorProcess(cp, tmp_path / "second", args)
    try:
        first.start()
        deadline = time.monotonic() + 30
        while leading(first) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leading(first) == holder(cp, lease), first.log()
        second.start()  # healthy as a standby (the liveness probe answers)
        time.sleep(3)
        assert leading(second) is None and "standing by" in second.log()

        apply(cp, namespace, with_free_ports(example("failover", rounds=600)))
        job = wait_job(cp, namespace, "failover", lambda s: s.get("round", 0) >= 3, log=first.log)
        before = uids(cp, namespace, "failover")
        assert len(before) == 6

        old = holder(cp, lease)
        first.kill()  # SIGKILL: no goodbye, the lease lapses
        killed = time.monotonic()
        while holder(cp, lease) == old and time.monotonic() < killed + 30:
            time.sleep(0.2)
        took = time.monotonic() - killed
        assert holder(cp, lease) == leading(second), second.log()
        assert took <= 15, f"the standby took {took:.1f} s to lead"

        # The new leader reconciles the same job: its status moves on, nothing is made twice.
        at = job["status"]["round"]
        wait_job(cp, namespace, "failover", lambda s: s.get("round", 0) > at + 5, log=second.log)
        assert uids(cp, namespace, "failover") == before
        assert finished(cp, namespace, "failover", second.log)["round"] == 600
        print(f"\nfailover: the standby led {took:.1f} s after the leader's SIGKILL")

        # A clean stop (SIGTERM, as a rolling update does) lets the lease go: the other
        # replica leads at its next try, not when the lease would lapse.
        first.start()
        second.stop()
        stopped = time.monotonic()
        while holder(cp, lease) in (None, leading(second)) and time.monotonic() < stopped + 30:
            time.sleep(0.2)
        handed = time.monotonic() - stopped
        assert holder(cp, lease) == leading(first), first.log()
        assert handed <= 5, f"the hand-over took {handed:.1f} s"
    finally:
        first.stop()
        second.stop()
        operator.start()


def test_an_upgraded_operator_keeps_the_running_pods_and_the_job_completes(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    """helm upgrade replaces the operator mid-job with a newer build: here another process
    with the newer release's engine image (what the upgraded chart passes). The pods the old
    one made keep running; new pods, if any were needed, would take the new image."""
    cp = control_plane
    apply(cp, namespace, with_free_ports(example("upgraded", rounds=600)))
    job = wait_job(cp, namespace, "upgraded", lambda s: s.get("round", 0) >= 3, log=operator.log)
    before = uids(cp, namespace, "upgraded")
    operator.stop()
    (tmp_path / "newer").mkdir()
    shutil.copy(operator.folder / "progress-key", tmp_path / "newer" / "progress-key")
    newer_image = "ghcr.io/fedkube/engine:0.1.1-cu132"
    newer = OperatorProcess(cp, tmp_path / "newer", ("--image", newer_image))
    try:
        newer.start()
        at = job["status"]["round"]
        moved = wait_job(
            cp, namespace, "upgraded", lambda s: s.get("round", 0) > at + 5, log=newer.log
        )
        # The new operator reads the job where the old one left it.
        assert moved["status"]["engineImage"] == newer_image
        assert uids(cp, namespace, "upgraded") == before
        assert finished(cp, namespace, "upgraded", newer.log)["aggregatorRestarts"] == 0
    finally:
        newer.stop()
        operator.start()
