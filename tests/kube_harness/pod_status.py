"""The pod statuses the node agent reports, as kubelet would: from its containers' runs, or
for a pod whose image was refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.kube_harness.node_agent import ContainerRun, PodRun


def refused_image_status(
    pod: dict[str, Any], container: str, reason: str, message: str, since: str
) -> dict[str, Any]:
    """A pod whose container's image was refused (kubelet's ErrImagePull, CRI-O's
    SignatureValidationFailed): Pending, that container waiting with the reason and message,
    the others waiting to be created."""

    def statuses(kind: str) -> list[dict[str, Any]]:
        out = []
        for c in pod["spec"].get(kind) or []:
            waiting = (
                {"reason": reason, "message": message}
                if c["name"] == container
                else {"reason": "ContainerCreating"}
            )
            out.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"waiting": waiting},
                }
            )
        return out

    def cond(kind: str, ok: bool, why: str = "") -> dict[str, Any]:
        c = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": since}
        return {**c, "reason": why} if why else c

    return {
        "phase": "Pending",
        "hostIP": "127.0.0.1",
        "startTime": since,
        "conditions": [
            cond("PodScheduled", True),
            cond("Initialized", False, "ContainersNotInitialized"),
            cond("ContainersReady", False, "ContainersNotReady"),
            cond("Ready", False, "ContainersNotReady"),
        ],
        "containerStatuses": statuses("containers"),
        "initContainerStatuses": statuses("initContainers"),
    }


def terminated(c: ContainerRun) -> dict[str, Any]:
    """A container's state once it exited."""
    return {
        "terminated": {
            "exitCode": c.exit_code,
            "reason": "Completed" if c.exit_code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": c.finished_at,
            **({"message": c.message} if c.message else {}),
        }
    }


def container_status(c: ContainerRun) -> dict[str, Any]:
    if c.running:
        state: dict[str, Any] = {"running": {"startedAt": c.started_at}}
    elif c.exit_code is not None and c.restart_at == 0.0:
        state = terminated(c)
    elif c.exit_code is not None:
        state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"exit code {c.exit_code}"}}
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


def pod_phase(run: PodRun) -> str:
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


def pod_status(run: PodRun, pod_ip: str) -> dict[str, Any]:
    """The status kubelet would report for a pod the agent runs."""
    phase = pod_phase(run)
    ready = phase == "Running" and all(c.running for c in run.containers)
    t = run.start_time

    def cond(kind: str, ok: bool) -> dict[str, Any]:
        return {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": t}

    return {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": run.start_time,
        "conditions": [
            cond("PodScheduled", True),
            cond("Initialized", all(c.exit_code == 0 for c in run.init_containers)),
            cond("ContainersReady", ready),
            cond("Ready", ready),
        ],
        "containerStatuses": [container_status(c) for c in run.containers],
        "initContainerStatuses": [container_status(c) for c in run.init_containers],
    }
