"""The test control plane is the real thing: schema and CEL validation, garbage collection,
pods run by the node agent, and two clusters side by side."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.node_agent import NodeAgent
from tests.support.waiting import eventually

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.fedkube.io}
spec:
  group: example.fedkube.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas, minReady]
            properties:
              replicas: {type: integer, minimum: 1, maximum: 10}
              minReady: {type: integer, minimum: 0}
            x-kubernetes-validations:
            - rule: self.minReady <= self.replicas
              message: minReady must not exceed replicas
"""


def widget(name: str, replicas: int, min_ready: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "example.fedkube.io/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "minReady": min_ready},
        }
    )


def test_crd_schema_and_cel_rule_are_enforced(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=CRD)
    control_plane.wait_crd_established("widgets.example.fedkube.io")
    ok = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=widget("good", 3, 2))
    assert "created" in ok.stdout
    bad = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=widget("bad", 2, 5), check=False
    )
    assert bad.returncode != 0
    assert "minReady must not exceed replicas" in bad.stderr
    out = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=widget("huge", 50, 1), check=False
    )
    assert out.returncode != 0 and "spec.replicas" in out.stderr and "10" in out.stderr


def test_garbage_collector_deletes_owned_objects(
    control_plane: ControlPlane, namespace: str
) -> None:
    k = control_plane.kubectl
    k("create", "configmap", "owner", "-n", namespace, "--from-literal=a=1")
    uid = k("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
        "data": {"b": "2"},
    }
    k("apply", "-n", namespace, "-f", "-", input=json.dumps(child))
    k("delete", "configmap", "owner", "-n", namespace)
    eventually(
        lambda: k("get", "configmap", "child", "-n", namespace, check=False).returncode != 0,
        what="the garbage collector to delete the child",
    )


def pod(name: str, code: str, restart: str = "Never", **extra: Any) -> str:
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "containers": [
            {"name": "main", "image": "python", "command": ["python", "-c", code], **extra}
        ],
    }
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def pod_json(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "pod", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def phase_is(
    cp: ControlPlane, ns: str, name: str, phase: str
) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        p = pod_json(cp, ns, name)
        return p if p.get("status", {}).get("phase") == phase else None

    return check


def test_pod_runs_to_success_and_keeps_its_log(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=pod("hello", "print('hello from a pod')")
    )
    p = eventually(phase_is(control_plane, namespace, "hello", "Succeeded"), what="Succeeded")
    (status,) = p["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    assert status["state"]["terminated"]["reason"] == "Completed"
    assert p["spec"]["nodeName"] == node_agent.node and p["status"]["podIP"] == "127.0.0.1"
    assert "hello from a pod" in node_agent.logs(namespace, "hello")


def test_failing_pod_reports_its_exit_code(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str
) -> None:
    control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=pod("sad", "import sys; sys.exit(3)")
    )
    p = eventually(phase_is(control_plane, namespace, "sad", "Failed"), what="Failed")
    assert p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_on_failure_restarts_until_success(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str, tmp_path: Any
) -> None:
    marker = tmp_path / "tries"
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(marker)!r}); n = int(p.read_text() or 0) "
        f"if p.exists() else 0; p.write_text(str(n + 1)); sys.exit(0 if n >= 2 else 1)"
    )
    control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=pod("flaky", code, restart="OnFailure")
    )
    p = eventually(phase_is(control_plane, namespace, "flaky", "Succeeded"), what="Succeeded")
    assert p["status"]["containerStatuses"][0]["restartCount"] == 2
    assert marker.read_text() == "3"


def test_deleting_a_running_pod_kills_its_process(
    control_plane: ControlPlane, node_agent: NodeAgent, namespace: str, tmp_path: Any
) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=pod("sleeper", code))
    eventually(phase_is(control_plane, namespace, "sleeper", "Running"), what="Running")
    pid = int(eventually(lambda: pid_file.exists() and pid_file.read_text(), what="pid"))
    os.kill(pid, 0)  # alive
    control_plane.kubectl("delete", "pod", "sleeper", "-n", namespace, "--timeout=60s")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    eventually(gone, timeout=15, what="the process to be killed")
    assert not pod_json(control_plane, namespace, "sleeper")


def test_env_from_configmap_and_secret_and_volumes(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    namespace: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    k = control_plane.kubectl
    k(
        "create",
        "configmap",
        "cfg",
        "-n",
        namespace,
        "--from-literal=mode=federated",
        "--from-literal=job.yaml=rounds: 3",
    )
    k("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=token=s3cret")
    monkeypatch.setattr(node_agent, "claim_dir", lambda ns, claim: tmp_path / claim)
    code = (
        "import os, pathlib;"
        "print('MODE', os.environ['MODE']); print('TOKEN', os.environ['TOKEN']);"
        "print('POD', os.environ['POD']);"
        "print('FILE', pathlib.Path('/etc/fedkube-test/job.yaml').read_text());"
        "pathlib.Path('/var/fedkube-test/data/out.txt').write_text('kept');"
        "pathlib.Path('/scratch/x').write_text('tmp')"
    )
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "wired"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "config", "configMap": {"name": "cfg"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "site-data"}},
                {"name": "scratch", "emptyDir": {}},
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "python",
                    "command": ["python", "-c", code],
                    "env": [
                        {
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}},
                        },
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                        },
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/fedkube-test", "readOnly": True},
                        {"name": "data", "mountPath": "/var/fedkube-test/data"},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }
            ],
        },
    }
    k("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    eventually(phase_is(control_plane, namespace, "wired", "Succeeded"), what="Succeeded")
    out = node_agent.logs(namespace, "wired")
    for line in ("MODE federated", "TOKEN s3cret", "POD wired", "FILE rounds: 3"):
        assert line in out, out
    assert (tmp_path / "site-data" / "out.txt").read_text() == "kept"
    assert not os.path.exists("/var/fedkube-test/data/out.txt"), "the mount stayed inside the pod"


def test_two_control_planes_side_by_side(
    control_plane: ControlPlane, second_control_plane: ControlPlane
) -> None:
    assert control_plane.api_port != second_control_plane.api_port
    for cp in (control_plane, second_control_plane):
        assert json.loads(cp.get("/version"))["gitVersion"].startswith("v1.3")
    second_control_plane.kubectl("create", "namespace", "only-in-second")
    assert control_plane.kubectl("get", "namespace", "only-in-second", check=False).returncode != 0
    assert second_control_plane.kubectl("get", "namespace", "only-in-second").returncode == 0
