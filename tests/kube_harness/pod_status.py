"""Pod statuses the node agent reports that do not come from a running container."""

from __future__ import annotations

from typing import Any


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
