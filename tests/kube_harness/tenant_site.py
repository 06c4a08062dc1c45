"""A site under its default policy, against a tenant: the strict operator, the tenant's
namespaces and Role (impersonated), and what the tests do as the tenant and as the site
admin. Used by the site-sovereignty and dataset-budget tests."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import wait_job, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import DATA_CLAIM, NAMESPACE, STATE_CLAIM, OperatorProcess
from tests.support.cli import fedkube_cli
from tests.support.site_files import file_job, write_site_files

TENANT = "researcher@hospital-a.example"
TENANT_RULES = [
    {"apiGroups": ["fedkube.io"], "resources": ["federatedjobs"], "verbs": ["*"]},
    {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["*"]},
]


@dataclass
class Site:
    cp: ControlPlane
    agent: NodeAgent
    operator: OperatorProcess
    allowed: str  # the namespace the site admin lets use its data
    elsewhere: str  # one it does not
    trail: Path  # the operator's audit trail (Helm site.audit)
    # The site's own namespace (the chart's release namespace): trainers that read its data
    # run there, beside its claims and certificates.
    home: str = NAMESPACE

    def as_tenant(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cp.kubectl("--as", TENANT, *args, input=input, check=check)

    def apply(self, namespace: str, doc: dict[str, Any]) -> None:
        self.as_tenant("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["-l", selector] if selector else []
        out = self.cp.kubectl("get", "pods", "-n", namespace, *args, "-o", "json")
        return list(json.loads(out.stdout)["items"])

    def trainers(self, job: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """A job's trainers that read the site's data, in the site's namespace, by site."""
        selector = f"fedkube.io/job={job},fedkube.io/job-namespace={namespace or self.allowed}"
        return {
            p["metadata"]["labels"]["fedkube.io/site"]: p for p in self.pods(self.home, selector)
        }

    def claim(self, name: str) -> Path:
        """One of the site's claims (data, state), in its namespace, as the node agent keeps it."""
        return self.agent.claim_dir(self.home, name)


def tenant_namespace(cp: ControlPlane, name: str) -> None:
    cp.kubectl("create", "namespace", name)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "tenant", "namespace": name},
        "rules": TENANT_RULES,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "tenant", "namespace": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}],
    }
    for doc in (role, binding):
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


@contextlib.contextmanager
def strict_site(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator: OperatorProcess,
    folder: Path,
    *extra_args: str,
) -> Iterator[Site]:
    """The shared test site's operator makes way for one under the default policy (the
    chart's values unchanged, but for ``extra_args``), which offers its data to one
    namespace; then it comes back."""
    suffix = uuid.uuid4().hex[:6]
    allowed, elsewhere = f"ward-{suffix}", f"lab-{suffix}"
    for ns in (allowed, elsewhere):
        tenant_namespace(control_plane, ns)
    operator.stop()
    trail = folder / "audit" / "operator.jsonl"
    # The site's status reads the dataset ledgers where the trainers keep them (Helm
    # siteStatus.stateClaimName: the state claim's storage, mounted in the operator).
    ledgers = node_agent.claim_dir(NAMESPACE, STATE_CLAIM) / "datasets"
    strict = OperatorProcess(
        control_plane,
        folder,
        (
            "--audit-log",
            str(trail),
            "--site-state-dir",
            str(ledgers),
            # As the chart passes it: the release's namespace is the site's own.
            "--site-namespace",
            NAMESPACE,
            *extra_args,
        ),
        policy={},
        data_namespaces=(allowed,),
        watch=(allowed, elsewhere),
    )
    try:
        yield Site(control_plane, node_agent, strict.start(), allowed, elsewhere, trail)
    finally:
        strict.stop()
        operator.start()
        # Approvals are cluster-scoped: they outlive the namespaces, and would show in the
        # next module's listings.
        listed = control_plane.kubectl("get", "siteapprovals", "-o", "name", check=False)
        for name in listed.stdout.split():
            if name.split("/")[-1].startswith((f"{allowed}.", f"{elsewhere}.")):
                control_plane.kubectl("delete", name, "--wait=false", check=False)
        for ns in (allowed, elsewhere):
            control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        # What the strict operator ran in the site's namespace for jobs it no longer
        # serves (the shared operator keeps no site namespace, and sweeps nothing there).
        for kind in ("pods", "configmaps", "networkpolicies"):
            control_plane.kubectl(
                "delete", kind, "-n", NAMESPACE, "--wait=false",
                "-l", f"fedkube.io/job-namespace in ({allowed},{elsewhere})",
                check=False,
            )  # fmt: skip
        # The site's certificates (of this module's consortium).
        listed = control_plane.kubectl("get", "secrets", "-n", NAMESPACE, "-o", "name").stdout
        for name in listed.split():
            if name.startswith("secret/fedkube-") and name.endswith("-tls"):
                control_plane.kubectl("delete", name, "-n", NAMESPACE, check=False)


def strict_site_fixture(folder: str, *extra_args: str) -> Any:
    """A module's ``site`` fixture: the strict operator of ``strict_site`` for the module."""

    @pytest.fixture(scope="module")
    def site(
        control_plane: ControlPlane,
        node_agent: NodeAgent,
        operator: OperatorProcess,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[Site]:
        where = tmp_path_factory.mktemp(folder)
        with strict_site(control_plane, node_agent, operator, where, *extra_args) as strict:
            yield strict

    return site


def compliant(site: Site, namespace: str, name: str) -> dict[str, Any]:
    """A job that promises what the default policy asks: DP-SGD within its bounds, secure
    aggregation, mutual TLS, the aggregator in this cluster, the default statistics floors."""
    files = write_site_files(site.claim(DATA_CLAIM))
    doc = file_job(
        {s: Path(p.name) for s, p in files.items()},
        name=name,
        rounds=3,
        privacy={"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0, "epsilonCap": 8.0}},
        security={"secureAggregation": {"threshold": 2}, "mutualTls": {}},
    )
    # Under secure aggregation the sites agree their text labels up front.
    doc["spec"]["task"]["labels"] = ["benign", "malignant"]
    return with_free_ports(doc)


def refusal_message(site: Site, namespace: str, name: str) -> str:
    job = wait_job(
        site.cp, namespace, name, lambda s: s.get("phase") == "Failed", log=site.operator.log
    )
    condition = next(c for c in job["status"]["conditions"] if c["type"] == "SpecValid")
    assert condition["status"] == "False" and condition["reason"] == "RefusedBySite", condition
    return str(condition["message"])


def no_pod_reached_the_data(site: Site, namespace: str, job: str) -> None:
    """No pod of the job, in the tenant's namespace or in the site's."""
    pods = site.pods(namespace, f"fedkube.io/job={job}") + list(
        site.trainers(job, namespace).values()
    )
    assert pods == [], [p["metadata"]["name"] for p in pods]


def secrets(site: Site, job: str, sites: list[str], folder: Path) -> None:
    """The certificates of one consortium, each key made where it is used: each site's in
    the site's namespace (Helm site.tls.secretName), requested by the site and signed by the
    consortium's CA, and the aggregator's in the tenant's namespace. The tenant also makes the
    conventional <job>-<site>-tls Secrets, with a CA of its own: a trainer that reads the
    site's data never mounts them."""
    from fedkube.security.certs import create_consortium, new_authority, write_authority
    from fedkube.security.signing_requests import (
        load_authority,
        sign_request,
        write_request,
        write_signed,
    )

    hosts = ["127.0.0.1", "localhost"]
    consortium = site.operator.folder / "consortium"
    if not (consortium / "ca").exists():
        write_authority(consortium / "ca", new_authority("hospitals"))
    ca = load_authority(consortium / "ca")

    def issued(home: Path, name: str, role: Any, names: list[str]) -> Path:
        # The party makes its key and request at home; only the request goes to the CA,
        # and only the certificate and the CA's come back.
        if not (home / "tls.crt").exists():
            request = write_request(home, name, names).read_bytes()
            write_signed(home, ca, sign_request(ca, request, role, name, names))
        return home

    aggregator = issued(consortium / "aggregator", "127.0.0.1", "aggregator", hosts)
    create_consortium(folder / "tenant", "hospitals", sites, hosts)
    site.as_tenant(
        "create", "secret", "generic", f"{job}-aggregator-tls", "-n", site.allowed,
        f"--from-file={aggregator / 'tls.crt'}", f"--from-file={aggregator / 'tls.key'}",
        f"--from-file={aggregator / 'ca.crt'}",
    )  # fmt: skip
    for s in sites:
        site.as_tenant(
            "create", "secret", "generic", f"{job}-{s}-tls", "-n", site.allowed,
            f"--from-file={folder / 'tenant' / 'sites' / s}",
        )  # fmt: skip
        home = issued(consortium / "sites" / s, s, "site", [])
        # The site's own, as its admin keeps it (applied: the same for every job here).
        made = site.cp.kubectl(
            "create", "secret", "generic", f"fedkube-{s}-tls", "-n", site.home,
            *(f"--from-file={home / f}" for f in ("tls.crt", "tls.key", "ca.crt")),
            "--dry-run=client", "-o", "yaml",
        )  # fmt: skip
        site.cp.kubectl("apply", "-f", "-", input=made.stdout)


def approve(site: Site, job: str, *extra: str) -> str:
    """`fedkube approve`, as the site admin (the control plane's admin credentials)."""
    out = fedkube_cli(
        [
            "approve",
            "-n",
            site.allowed,
            job,
            "--yes",
            "--kubectl",
            str(site.cp.bin / "kubectl"),
            *extra,
        ],
        env={**os.environ, "KUBECONFIG": str(site.cp.kubeconfig)},
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def awaiting(site: Site, job: str, reason: str) -> dict[str, Any]:
    def held(status: dict[str, Any]) -> bool:
        c = [c for c in status.get("conditions", []) if c["type"] == "AwaitingSiteApproval"]
        return bool(c) and c[0]["status"] == "True" and c[0]["reason"] == reason

    return wait_job(site.cp, site.allowed, job, held, log=site.operator.log)


def running_trainers(site: Site, job: str) -> list[str]:
    """The sites whose trainers of the job are there and not being deleted."""
    return sorted(
        name
        for name, p in site.trainers(job).items()
        if p["metadata"].get("deletionTimestamp") is None
    )


def trail_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verified(path: Path) -> Path:
    out = fedkube_cli(["audit", "verify", str(path)], timeout=60)
    assert out.returncode == 0 and "intact" in out.stdout, out.stdout + out.stderr
    return path
