"""The operator as the tests run it: a real process, logged in as the chart's ServiceAccount
(a TokenRequest token), so the RBAC in helm/fedkube/templates is exactly what it has."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from fedkube.cli.launch import free_port

from tests.kube_harness.controlplane import ROOT, ControlPlane

NAMESPACE = "fedkube-system"
SERVICE_ACCOUNT = "fedkube-operator"
DATA_CLAIM = "site-data"
STATE_CLAIM = "site-state"
# The shared test site trains the suite's jobs (plain files, no DP, clear text in the
# cluster): its admin relaxed the safe defaults in writing, as a real site's values would.
# The sovereignty tests run a site under the default policy (and its consent) instead.
RELAXED_POLICY: dict[str, Any] = {
    "approval": "policy",
    "privacy": {"required": False},
    "secureAggregation": {"required": False},
    "mutualTls": {"required": False},
    "aggregators": {"endpoints": ["*"]},
    "statistics": {"minBinCount": 1, "minSiteRows": 1},
    "minBatchSizeWithoutDp": 1,
}


def install_crd_and_rbac(cp: ControlPlane) -> None:
    for crd in ("federatedjobs", "siteapprovals", "federatedsites"):
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / f"{crd}.yaml"))
        cp.wait_crd_established(f"{crd}.fedkube.io")
    if cp.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        cp.kubectl("create", "namespace", NAMESPACE)
    rendered = subprocess.run(
        [
            str(cp.bin / "helm"),
            "template",
            "fedkube",
            str(ROOT / "helm" / "fedkube"),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            "1.35.4",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cp.kubectl("apply", "-f", "-", input=rendered)


def service_account_kubeconfig(
    cp: ControlPlane, path: Path, account: str = SERVICE_ACCOUNT, namespace: str = NAMESPACE
) -> Path:
    token = cp.kubectl("create", "token", account, "-n", namespace, "--duration=4h").stdout.strip()
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "{cp.server}", certificate-authority: "{cp.pki / "ca.crt"}"}}
users:
- name: operator
  user: {{token: "{token}"}}
contexts:
- name: c
  context: {{cluster: c, user: operator}}
current-context: c
"""
    )
    return path


class OperatorProcess:
    def __init__(
        self,
        cp: ControlPlane,
        folder: Path,
        extra_args: tuple[str, ...] = (),
        *,
        policy: dict[str, Any] | None = None,
        data_namespaces: tuple[str, ...] = ("*",),
        watch: tuple[str, ...] = (),
    ) -> None:
        self.cp = cp
        self.folder = folder
        # Flags for this site only (its Helm values), after the shared test site's.
        self.extra_args = extra_args
        folder.mkdir(parents=True, exist_ok=True)
        # The site's policy file, as the chart's ConfigMap holds it (Helm site.policy).
        self.policy_file = folder / "site-policy.yaml"
        self.policy_file.write_text(
            yaml.safe_dump(RELAXED_POLICY if policy is None else policy, sort_keys=True)
        )
        # The operator's key for the jobs' /progress tokens (the chart's Secret).
        key = folder / "progress-key"
        if not key.exists():
            key.write_text(secrets.token_urlsafe(36))
        # Helm site.data.namespaces, and operator.watchNamespaces (empty: all).
        self.site_args = [
            f"--progress-key-file={key}",
            *(f"--data-namespace={ns}" for ns in data_namespaces),
            *(f"--namespace={ns}" for ns in watch),
        ]
        install_crd_and_rbac(cp)
        self.kubeconfig = service_account_kubeconfig(cp, folder / "operator.kubeconfig")
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> OperatorProcess:
        self.starts += 1
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        with open(self.folder / "operator.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fedkube_operator",
                    "--metrics-port",
                    str(self.metrics_port),
                    "--health-port",
                    str(self.health_port),
                    # Pods share the host's loopback here: no cluster DNS, no pod network.
                    "--aggregator-host",
                    "127.0.0.1",
                    "--workers-host",
                    "127.0.0.1",
                    "--progress-host",
                    "127.0.0.1",
                    # What this test site's admin lets jobs import (see the plug-in tests).
                    "--allow-import",
                    "hospital_models_*",
                    # The claim this test site's admin offers jobs as its data volume.
                    "--data-claim",
                    DATA_CLAIM,
                    # And where its trainers keep their privacy ledgers.
                    "--state-claim",
                    STATE_CLAIM,
                    # The claims and Secrets its jobs may name (the restart tests' claims,
                    # the TLS test's Secret).
                    "--allow-claim",
                    "*-state",
                    "--allow-secret",
                    "hospital-a-tls",
                    # Aggregators may be LoadBalancer Services (the two-hospital walkthrough).
                    "--aggregator-service-type",
                    "ClusterIP",
                    "--aggregator-service-type",
                    "LoadBalancer",
                    "--site-policy",
                    str(self.policy_file),
                    *self.site_args,
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
                ):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the operator did not become healthy:\n{self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def progress_token(self, namespace: str, job: str) -> str:
        """The token the operator gave the job's pods for /progress (from its key file)."""
        import json

        from fedkube_operator.settings import OperatorSettings

        found = self.cp.kubectl("get", "fj", job, "-n", namespace, "-o", "json").stdout
        key = (self.folder / "progress-key").read_bytes().strip()
        token = OperatorSettings(progress_key=key).progress_token(json.loads(found))
        assert token is not None
        return token

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()

    def log(self, tail: int = 6000) -> str:
        p = self.folder / "operator.log"
        return p.read_text(errors="replace")[-tail:] if p.exists() else ""
