"""Pure: what a trainer pod gets of its site, beside the job's own volumes: the site's data
volume (read-only), its folder on the site's state claim (the job's ledger and audit trail,
and the datasets' shared ledgers), and the CAs the site pins. Arguments, volumes and mounts
for each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedkube.spec.job import FederatedJob
from fedkube.spec.sites import SiteSpec

from fedkube_operator.settings import OperatorSettings

# Where a trainer pod sees its site's data volume, read-only.
DATA_DIR = "/data"
# Where a trainer pod keeps what must outlive it, on the site's state claim.
SITE_STATE_DIR = "/var/lib/fedkube-site"
DATASETS_DIR = "/var/lib/fedkube-datasets"
# The trainer's audit trail, in its folder on the site's state claim.
AUDIT_FILE = "audit.jsonl"


@dataclass
class SiteMounts:
    args: list[str] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)


def site_data(settings: OperatorSettings) -> SiteMounts:
    """The site's data volume at DATA_DIR, read-only; nothing when the site offers none."""
    data = settings.data_volume()
    if data is None:
        return SiteMounts()
    return SiteMounts(
        ["--data-dir", DATA_DIR],
        [{"name": "site-data", **data}],
        [{"name": "site-data", "mountPath": DATA_DIR, "readOnly": True}],
    )


def site_state(
    job: FederatedJob, namespace: str, site: SiteSpec, settings: OperatorSettings
) -> SiteMounts:
    """The trainer's --state-dir on the site's state claim (one folder per namespace, job and
    site), so a recreated pod keeps its privacy ledger; none without a claim."""
    if not settings.state_claim:
        return SiteMounts()
    volume = {"name": "site-state", "persistentVolumeClaim": {"claimName": settings.state_claim}}
    mount = {
        "name": "site-state",
        "mountPath": SITE_STATE_DIR,
        "subPath": f"{namespace}/{job.name}/{site.name}",
    }
    # Beside the ledger, the trail of what this trainer sent (fedkube audit verify).
    trail = f"{SITE_STATE_DIR}/{AUDIT_FILE}"
    out = SiteMounts(["--state-dir", SITE_STATE_DIR, "--audit-log", trail], [volume], [mount])
    volume_name = settings.data_volume_name()
    if volume_name is not None:
        # One ledger per dataset, across every job on this claim: the trainer reserves the
        # job's planned epsilon there before it trains, and the site's cap bounds the sum.
        out.mounts.append({"name": "site-state", "mountPath": DATASETS_DIR, "subPath": "datasets"})
        out.args += [
            "--datasets-dir",
            DATASETS_DIR,
            "--dataset-volume",
            volume_name,
            "--job-id",
            f"{namespace}/{job.name}",
        ]
    return out


def trusted_cas(site: SiteSpec, settings: OperatorSettings) -> list[str]:
    """The CAs a trainer that reads the site's data may trust (Helm
    site.policy.mutualTls.trustedCaSha256), for it to check its TLS folder against."""
    reads = site.data is not None and site.data.file is not None
    if not reads or settings.data_volume() is None:
        return []
    pins = settings.policy.mutual_tls.trusted_ca_sha256
    return [arg for pin in pins for arg in ("--trusted-ca-sha256", pin)]
