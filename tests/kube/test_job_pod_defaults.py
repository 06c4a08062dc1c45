"""The pods the operator makes with a site's jobPods defaults, as the real API server takes
them: a namespace whose ResourceQuota asks for requests and limits admits them, and the
priority and runtime classes resolve."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import yaml
from fedkube.spec import parse_job
from fedkube_operator.desired import desired
from fedkube_operator.job_pod_defaults import load_job_pod_defaults
from fedkube_operator.settings import OperatorSettings

from tests.kube_harness.controlplane import ControlPlane
from tests.operator.test_job_pod_defaults import DEFAULTS
from tests.operator.test_plan import resource


def test_the_api_server_admits_job_pods_with_the_sites_defaults(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all(
            [
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": "clinical-batch"},
                    "value": 1000,
                },
                {
                    "apiVersion": "node.k8s.io/v1",
                    "kind": "RuntimeClass",
                    "metadata": {"name": "gvisor"},
                    "handler": "runsc",
                },
            ]
        ),
    )
    cp.kubectl(
        "-n",
        namespace,
        "create",
        "quota",
        "ward",
        "--hard=requests.cpu=8,requests.memory=32Gi,limits.memory=64Gi",
    )
    # Quota admission waits until the controller has counted the namespace's use.
    deadline = time.monotonic() + 60
    while (
        not json.loads(cp.kubectl("-n", namespace, "get", "quota", "ward", "-o", "json").stdout)
        .get("status", {})
        .get("hard")
    ):
        assert time.monotonic() < deadline, "the quota controller never counted the namespace"
        time.sleep(0.5)
    r = resource()
    r["metadata"]["namespace"] = namespace
    # Without the site's defaults the quota refuses the job's pods: nothing says what to ask.
    bare = next(iter(desired(r, parse_job(r), OperatorSettings()).pods.values()))
    bare["metadata"].pop("ownerReferences")
    out = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bare), check=False)
    assert out.returncode != 0 and "must specify" in out.stderr, out.stderr
    # What the quota asks of every pod, for both roles.
    asked = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    site = {**DEFAULTS, "resources": {**DEFAULTS["resources"], "aggregator": asked}}
    (tmp_path / "job-pods.yaml").write_text(yaml.safe_dump(site))
    defaults = load_job_pod_defaults(tmp_path / "job-pods.yaml")
    settings = replace(OperatorSettings(), job_pod_defaults=defaults)
    pods = list(desired(r, parse_job(r), settings).pods.values())
    for pod in pods:
        pod["metadata"].pop("ownerReferences")  # the job is not in this API server
        out = cp.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod)
        )
        made = json.loads(out.stdout)
        # The Priority admission plugin resolved the class to its value.
        assert made["spec"]["priority"] == 1000, made["metadata"]["name"]
        assert made["spec"]["runtimeClassName"] == "gvisor"
        assert made["spec"]["topologySpreadConstraints"][0]["labelSelector"] == {
            "matchLabels": {"fedkube.io/job": "breast-cancer"}
        }
    # A class the cluster lacks is refused at the door, naming it: the site's typo shows on
    # the first pod, in the operator's events, not as a pod that never schedules.
    missing = replace(
        settings,
        job_pod_defaults=defaults.model_copy(update={"priority_class_name": "no-such-class"}),
    )
    pod = next(iter(desired(r, parse_job(r), missing).pods.values()))
    pod["metadata"].pop("ownerReferences")
    out = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert out.returncode != 0 and "no-such-class" in out.stderr, out.stderr
