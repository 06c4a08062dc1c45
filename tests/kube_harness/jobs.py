"""FederatedJob helpers for the operator's end-to-end tests."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fedkube.cli.launch import free_port
from safetensors.numpy import load_file

from tests.kube_harness.controlplane import ROOT, ControlPlane

EXAMPLE = ROOT / "examples" / "breast-cancer.yaml"


def example(name: str | None = None, **spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    if name:
        doc["metadata"]["name"] = name
    doc["spec"].update(copy.deepcopy(spec))
    return doc


def with_free_ports(doc: dict[str, Any]) -> dict[str, Any]:
    # Every pod shares the host's loopback here, so each aggregator needs its own ports.
    doc["spec"]["aggregator"] = {
        **doc["spec"].get("aggregator", {}),
        "port": free_port(),
        "httpPort": free_port(),
    }
    return doc


def apply(cp: ControlPlane, ns: str, doc: dict[str, Any]) -> None:
    cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))


def get_job(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "fj", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def wait_job(
    cp: ControlPlane, ns: str, name: str, until: Any, timeout: float = 240, log: Any = None
) -> dict[str, Any]:
    end = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < end:
        job = get_job(cp, ns, name)
        if job and until(job.get("status", {})):
            return job
        time.sleep(0.3)
    extra = log() if log else ""
    raise AssertionError(f"timed out; status: {json.dumps(job.get('status'), indent=1)}\n{extra}")


def pods(cp: ControlPlane, ns: str, job: str) -> dict[str, dict[str, Any]]:
    out = cp.kubectl("get", "pods", "-n", ns, "-l", f"fedkube.io/job={job}", "-o", "json")
    return {p["metadata"]["name"]: p for p in json.loads(out.stdout)["items"]}


def result_file(root: Path, ns: str, job: str) -> dict[str, Any]:
    """The aggregator's result.json, wherever its state volume lives on the node agent's disk."""
    found = sorted(root.glob(f"**/{ns}/**/output/result.json")) + sorted(
        root.glob(f"claims/{ns}/*/output/result.json")
    )
    assert found, f"no result.json for {ns}/{job} under {root}"
    return json.loads(found[-1].read_text())


def model_after_the_pods(cp: ControlPlane, ns: str, job: str, claim: Path, rounds: int) -> Path:
    """Waits until the job's pods are gone (podCleanup), then checks that the model and
    result are on its claim, readable without them; returns the model's file."""
    end = time.monotonic() + 60
    while pods(cp, ns, job) and time.monotonic() < end:
        time.sleep(0.3)
    assert pods(cp, ns, job) == {}
    path = claim / "output" / "model.safetensors"
    model = load_file(path)
    assert model and all(np.isfinite(v).all() for v in model.values())
    assert json.loads((claim / "output" / "result.json").read_text())["roundsCompleted"] == rounds
    return path
