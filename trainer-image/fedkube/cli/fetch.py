"""`fedkube fetch JOB`: a finished job's model, model card and result, off the cluster.

The model stays on the job's claim after its pods are gone. With nothing but kubectl access
to the job's namespace (pods: create, get, delete; pods/proxy: get), this starts a helper pod
from the image the job's pods ran (status.engineImage) with the claim mounted read-only, reads
its files through the API server's pod proxy, checks each against the size and sha256 the
helper listed and the model against its card's modelSha256, writes them into the target
folder (all or nothing) and deletes the helper.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkube.cli.output_server import TOKEN_ENV
from fedkube.errors import FetchError

HELPER_PORT = 8080
OUTPUT_MOUNT = "/var/lib/fedkube"
MODEL_FILE = "model.safetensors"
CARD_FILE = "model-card.json"


@dataclass(frozen=True)
class Kubectl:
    argv: tuple[str, ...]  # kubectl and its global flags (--kubeconfig)

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [*self.argv, *args], input=stdin, capture_output=True, timeout=120, check=False
            )
        except FileNotFoundError:
            raise FetchError(f"{self.argv[0]} was not found: pass --kubectl PATH") from None

    def json(self, *args: str) -> dict[str, Any]:
        out = self.run(*args, "-o", "json")
        if out.returncode != 0:
            raise FetchError(f"kubectl {' '.join(args)}: {_tail(out.stderr)}")
        loaded: dict[str, Any] = json.loads(out.stdout)
        return loaded


def _tail(raw: bytes) -> str:
    lines = raw.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def job_output(kubectl: Kubectl, job: str, namespace: str) -> tuple[str, str]:
    """The claim holding a Succeeded job's output, and the engine image its pods ran."""
    found = kubectl.run("get", "federatedjobs.fedkube.io", job, "-n", namespace, "-o", "json")
    if found.returncode != 0:
        raise FetchError(
            f"no FederatedJob {job!r} in namespace {namespace!r}: {_tail(found.stderr)}"
        )
    status = json.loads(found.stdout).get("status") or {}
    phase = status.get("phase", "Pending")
    if phase != "Succeeded":
        raise FetchError(
            f"job {namespace}/{job} is {phase}: its model is fetched once it has Succeeded"
            + (f" ({status['message']})" if status.get("message") else "")
        )
    claim, image = status.get("modelVolume"), status.get("engineImage")
    if not claim or not image:
        raise FetchError(
            f"job {namespace}/{job} keeps no model in this cluster (status.modelVolume is "
            "empty: its aggregator runs at another organisation; fetch it there)"
        )
    return claim, image


def helper_pod(
    job: str, name: str, claim: str, image: str, token: str, port: int = HELPER_PORT
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"fedkube.io/job": job, "fedkube.io/role": "fetch"},
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 900,  # never outlives a fetch gone wrong for long
            "automountServiceAccountToken": False,
            # The restricted Pod Security Standard, as the job's own pods.
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "serve-output",
                    "image": image,
                    "command": ["fedkube", "serve-output", "--dir", f"{OUTPUT_MOUNT}/output",
                                "--port", str(port)],
                    "env": [{"name": TOKEN_ENV, "value": token}],
                    "ports": [{"name": "http", "containerPort": port}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "output", "mountPath": OUTPUT_MOUNT, "readOnly": True}
                    ],
                }
            ],
            "volumes": [
                {"name": "output", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            ],
        },
    }  # fmt: skip


def _wait_running(kubectl: Kubectl, name: str, namespace: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = kubectl.json("get", "pod", name, "-n", namespace)
        status = pod.get("status") or {}
        if status.get("phase") in ("Failed", "Succeeded"):
            raise FetchError(f"the helper pod {namespace}/{name} ended ({status['phase']})")
        for c in status.get("containerStatuses") or []:
            if "running" in (c.get("state") or {}):
                return
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                raise FetchError(
                    f"the helper pod {namespace}/{name} cannot start: {waiting['reason']}: "
                    f"{waiting.get('message', '')}"
                )
        time.sleep(0.5)
    raise FetchError(f"the helper pod {namespace}/{name} was not running after {timeout:.0f} s")


def _get(kubectl: Kubectl, base: str, path: str, token: str, attempts: int = 1) -> bytes:
    for attempt in range(attempts):
        out = kubectl.run("get", "--raw", f"{base}/{path}?token={token}")
        if out.returncode == 0:
            return out.stdout
        if attempt + 1 < attempts:
            time.sleep(1)  # the server may not listen yet
    raise FetchError(f"reading {path} through the API server's pod proxy: {_tail(out.stderr)}")


def fetch(
    kubectl: Kubectl,
    job: str,
    namespace: str,
    target: Path,
    timeout: float,
    port: int = HELPER_PORT,
) -> list[Path]:
    claim, image = job_output(kubectl, job, namespace)
    token = secrets.token_urlsafe(24)
    name = f"{job[:45]}-fetch-{secrets.token_hex(3)}"
    pod = json.dumps(helper_pod(job, name, claim, image, token, port)).encode()
    created = kubectl.run("create", "-n", namespace, "-f", "-", stdin=pod)
    if created.returncode != 0:
        raise FetchError(f"creating the helper pod in {namespace}: {_tail(created.stderr)}")
    try:
        _wait_running(kubectl, name, namespace, timeout)
        base = f"/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy"
        index = json.loads(_get(kubectl, base, "index.json", token, attempts=20))["files"]
        if MODEL_FILE not in index:
            raise FetchError(f"{claim}: no {MODEL_FILE} in the job's output ({sorted(index)})")
        fetched = {}
        for file, expected in index.items():
            data = _get(kubectl, base, f"files/{file}", token)
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != expected["size"] or digest != expected["sha256"]:
                raise FetchError(
                    f"{file} arrived as {len(data)} bytes, sha256 {digest[:16]}..., not the "
                    f"{expected['size']} bytes, {expected['sha256'][:16]}... listed: try again"
                )
            fetched[file] = data
        _get(kubectl, base, "done", token)
    finally:
        kubectl.run("delete", "pod", name, "-n", namespace, "--wait=false")
    card = json.loads(fetched[CARD_FILE]) if CARD_FILE in fetched else {}
    if card.get("modelSha256") != hashlib.sha256(fetched[MODEL_FILE]).hexdigest():
        raise FetchError(f"{MODEL_FILE} is not the model its card names: nothing was written")
    return _write_all(target, fetched)


def _write_all(target: Path, files: dict[str, bytes]) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    partial = {target / f"{name}.partial": data for name, data in files.items()}
    for path, data in partial.items():
        path.write_bytes(data)
    written = []
    for path in partial:
        final = path.with_name(path.name.removesuffix(".partial"))
        path.replace(final)
        written.append(final)
    return written


def cmd_fetch(args: argparse.Namespace) -> int:
    argv = [args.kubectl] + (["--kubeconfig", args.kubeconfig] if args.kubeconfig else [])
    target = Path(args.to or args.job)
    kubectl = Kubectl(tuple(argv))
    written = fetch(kubectl, args.job, args.namespace, target, args.timeout, args.helper_port)
    for path in written:
        print(path)
    return 0


def fetch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch", help="copy a finished job's model, model card and result off the cluster"
    )
    p.add_argument("job", help="the FederatedJob's name")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--to", help="folder to write into (default: ./JOB)")
    p.add_argument("--kubectl", default="kubectl", help="the kubectl to run (default: on PATH)")
    p.add_argument("--kubeconfig", help="passed to kubectl (default: its own)")
    p.add_argument("--timeout", type=float, default=300.0, help="for the helper pod to start")
    p.add_argument(
        "--helper-port",
        type=int,
        default=HELPER_PORT,
        help="the helper pod's port (change it only where pods share the node's network)",
    )
    p.set_defaults(fn=cmd_fetch)
