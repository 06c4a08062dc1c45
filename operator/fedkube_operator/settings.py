"""What the site admin decided (Helm values, passed to the operator as flags): the images, the
site's name, data volume, state claim, policy, offers and the job pods' ids."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from fedkube import __version__
from fedkube.spec.site_policy import SitePolicy

from fedkube_operator.job_pod_defaults import JobPodDefaults


@dataclass(frozen=True)
class OperatorSettings:
    # The engine image job pods run (Helm: image), and their imagePullPolicy (None: the
    # cluster's default for the tag). The default is what the release publishes.
    image: str = f"ghcr.io/fedkube/engine:{__version__}-cu132"
    # Host trainers dial for an aggregator in this cluster; {service} and {namespace} are
    # filled in. Host-network set-ups (and the test node agent) use 127.0.0.1.
    aggregator_host: str = "{service}.{namespace}.svc"
    # Host the operator polls for progress; empty: the aggregator pod's IP.
    progress_host: str = ""
    # Import paths this site lets jobs run in its pods (Helm: site.allowedImports).
    allowed_imports: tuple[str, ...] = ()
    # The job pods' user, group and volume group (Helm: jobPods.securityContext); None
    # leaves it to the platform (OpenShift assigns its own range).
    # The site's data volume (Helm: site.data): a claim, or a node folder, that trainer pods
    # mount read-only at site_mounts.DATA_DIR; a job's data.file paths are read inside it.
    data_claim: str | None = None
    data_host_path: str | None = None
    # The namespaces whose jobs may read that volume (Helm site.data.namespaces; names or
    # shell-style patterns). None by default: offering data and naming who may use it are
    # two decisions of the admin's.
    data_namespaces: tuple[str, ...] = ()
    # What a job must promise before it reads the site's data (Helm site.policy): DP, secure
    # aggregation, mutual TLS, trusted aggregators, statistics floors. The safe defaults.
    policy: SitePolicy = field(default_factory=SitePolicy)
    # Where trainers keep what must outlive a pod (the privacy ledger, the uplink residual):
    # a claim of the site's (Helm site.state.claimName), one folder per job and site in it.
    state_claim: str | None = None
    # The site's own namespace (Helm: the release namespace), which tenants cannot use: a
    # trainer that reads the site's data runs there, with the data and state claims and the
    # site's certificate (site_tls_secret, "{site}" filled in), all the site admin's. ""
    # keeps such trainers in the job's namespace: one team's cluster, where the tenant is
    # the site.
    site_namespace: str = ""
    site_tls_secret: str = "fedkube-{site}-tls"
    # The operator's own key (Helm: a Secret the chart makes once), from which each job's
    # /progress token is derived: its aggregator (and relaying trainers) answer only it.
    # None: /progress answers any pod that reaches it.
    progress_key: bytes | None = None
    # Each job's own claim for its model, result and checkpoints (when the job names none):
    # its size and StorageClass (Helm jobStorage; "" is the cluster's default class).
    # Service types a job's aggregator may have here (Helm site.aggregatorServiceTypes):
    # whether another organisation may reach into this cluster is the site's decision.
    aggregator_service_types: tuple[str, ...] = ("ClusterIP",)
    job_storage_size: str = "1Gi"
    job_storage_class: str = ""
    # The site's privacy budget per dataset across jobs (Helm site.epsilonCap), kept by its
    # trainers on the state claim; each job also stops at the lower of it and its own cap.
    epsilon_cap: float | None = None
    run_as_user: int | None = 65532
    run_as_group: int | None = 65532
    fs_group: int | None = 65532
    image_pull_policy: str | None = None
    # docker-registry Secrets job pods pull the engine image with (Helm image.pullSecrets);
    # each must exist in the job's namespace, as Kubernetes reads it from there.
    image_pull_secrets: tuple[str, ...] = ()
    # Where a trainer of a job whose aggregator is at another organisation serves the job's
    # /progress to this operator (relayed over its authenticated channel).
    progress_relay_port: int = 9092
    # This cluster's site (Helm site.name): the only site whose trainer runs here. None: the
    # admin lets every site a job lists train here (a one-cluster consortium).
    site: str | None = None
    # GPUs a job's trainer pod may ask for here (Helm site.gpus), and their resource name.
    max_gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    # Secrets a job may name for its certificates besides the conventional <job>-aggregator-tls
    # and <job>-<site>-tls (Helm site.tlsSecrets), and claims it may name for its model
    # (Helm jobStorage.allowedClaims): names or shell-style patterns. A job reaches no other
    # Secret or claim.
    allowed_secrets: tuple[str, ...] = ()
    allowed_claims: tuple[str, ...] = ()
    # NetworkPolicies per job (Helm networkPolicy): trainers reach only the aggregator; the
    # aggregator accepts its trainers, these remote sites' CIDRs, and on its HTTP port the
    # operator's namespace and these scrapers' namespaces. Trainers of a job whose aggregator
    # is elsewhere may dial these CIDRs.
    network_policy: bool = False
    operator_namespace: str = ""
    aggregator_ingress_cidrs: tuple[str, ...] = ()
    scrape_namespaces: tuple[str, ...] = ()
    remote_aggregator_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    # The site's defaults for job pods (Helm jobPods): resources per role, priority and
    # runtime class, labels, annotations, topology spread.
    job_pod_defaults: JobPodDefaults = field(default_factory=JobPodDefaults)
    # Host a site's worker pods dial for its trainer (its headless Service; {service} and
    # {namespace} filled in); the test node agent uses 127.0.0.1.
    workers_host: str = "{service}.{namespace}.svc"
    # The site's gang scheduler (Helm site.gangScheduler), if it has one: a site's ranks
    # carry its pod-group label and schedulerName, placed together or not at all.
    gang_scheduler: str = ""

    def data_volume(self) -> dict[str, Any] | None:
        if self.data_claim:
            return {"persistentVolumeClaim": {"claimName": self.data_claim, "readOnly": True}}
        if self.data_host_path:
            return {"hostPath": {"path": self.data_host_path, "type": "Directory"}}
        return None

    def data_volume_name(self) -> str | None:
        """The data volume as the dataset ledgers name it."""
        if self.data_claim:
            return f"claim/{self.data_claim}"
        if self.data_host_path:
            return f"hostPath{self.data_host_path}"
        return None

    def progress_token(self, resource: dict[str, Any]) -> str | None:
        """The job's /progress token: HMAC of its namespace, name and uid under the
        operator's key, so the operator needs to keep nothing to poll it after a restart."""
        if self.progress_key is None:
            return None
        meta = resource["metadata"]
        job = f"{meta.get('namespace', '')}/{meta['name']}/{meta.get('uid', '')}"
        return hmac.new(self.progress_key, job.encode(), hashlib.sha256).hexdigest()

    def site_secret(self, site: str) -> str:
        """The Secret (in site_namespace) that holds this site's key and certificate."""
        return self.site_tls_secret.replace("{site}", site)

    def pod_security_context(self) -> dict[str, Any]:
        """What the "restricted" Pod Security Standard asks of a pod, and the site's ids."""
        ids = {
            "runAsUser": self.run_as_user,
            "runAsGroup": self.run_as_group,
            "fsGroup": self.fs_group,
        }
        return {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            **{k: v for k, v in ids.items() if v is not None},
        }

    def plugin_args(self) -> list[str]:
        return [arg for pattern in self.allowed_imports for arg in ("--allow-import", pattern)]
