"""Pure: the site's status as anyone at the site may read it (the FederatedSite resource):
the policy in force, the data offered and to whom, each dataset's privacy budget (what every
job reserved and spent of it, held-out scores apart), and the jobs this operator sees,
approved, waiting or refused, with the reasons. Built from the jobs' own status and the
dataset ledgers the trainers keep on the state claim; the operator writes it, nothing reads
it back."""

from __future__ import annotations

from typing import Any

from fedkube.spec.site_policy import SitePolicy
from pydantic import Field

from fedkube_operator.settings import OperatorSettings
from fedkube_operator.status_model import StatusModel

SITE_KIND = "FederatedSite"
SITE_PLURAL = "federatedsites"


class DatasetJob(StatusModel):
    job: str = Field(max_length=320, description="namespace/name")
    reserved: float = Field(default=0.0, description="The epsilon it reserved before training.")
    spent: float = Field(default=0.0, description="DP-SGD and held-out scores, summed.")
    held_out: float = Field(default=0.0, description="Of spent, on noised held-out scores.")
    finished: bool = Field(default=False, description="Whether the job has ended.")


class DatasetStatus(StatusModel):
    volume: str = Field(max_length=512, description="The data volume holding the file.")
    file: str = Field(max_length=4096, description="The file's path in that volume.")
    sha256: str = Field(max_length=64, description="The digest of the file's contents.")
    held: float = Field(
        description="What the jobs hold: a running job its reservation or "
        "its spend, whichever is larger; a finished one its spend."
    )
    left: float | None = Field(default=None, description="Of site.epsilonCap; none without.")
    jobs: list[DatasetJob] = Field(
        default_factory=list, max_length=10000, description="Every job that read it."
    )


class SiteJob(StatusModel):
    job: str = Field(max_length=320, description="namespace/name")
    phase: str = Field(max_length=32, description="The job's phase.")
    approval: str = Field(
        default="",
        max_length=64,
        description="Approved, or why the job waits (NoApproval, TermsChanged, "
        "ApprovalExpired); empty where the policy alone admits.",
    )
    refused: str = Field(default="", max_length=4096, description="Why the site refused it.")


class FederatedSiteStatus(StatusModel):
    """What this site enforces, as its operator reads its Helm values, and what it holds."""

    policy: SitePolicy = Field(description="The site's policy (Helm value site.policy).")
    epsilon_cap: float | None = Field(
        default=None, description="The privacy budget per dataset (site.epsilonCap)."
    )
    data_volume: str | None = Field(default=None, description="The site's data volume.")
    data_namespaces: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Namespaces whose jobs may read the site's data.",
    )
    datasets: list[DatasetStatus] = Field(
        default_factory=list,
        max_length=10000,
        description="Each dataset's privacy ledger: what the jobs hold of its budget.",
    )
    ledgers: str = Field(
        default="",
        max_length=4096,
        description="Where the dataset ledgers are read, or why they could not be.",
    )
    jobs: list[SiteJob] = Field(
        default_factory=list,
        max_length=10000,
        description="The jobs that name this site, admitted or not.",
    )
    summary: str = Field(default="", max_length=256, description="The above in one line.")
    updated_at: str = Field(default="", max_length=64, description="When (RFC 3339).")


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _job(resource: dict[str, Any]) -> SiteJob:
    meta, status = resource["metadata"], resource.get("status") or {}
    valid = _condition(status, "SpecValid")
    waiting = _condition(status, "AwaitingSiteApproval")
    approval = ""
    if waiting:
        approval = waiting.get("reason", "") if waiting.get("status") == "True" else "Approved"
    refused = ""
    if valid.get("status") == "False" and valid.get("reason") == "RefusedBySite":
        refused = str(valid.get("message", ""))[:4096]
    return SiteJob(
        job=f"{meta.get('namespace', '')}/{meta['name']}",
        phase=status.get("phase") or "Pending",
        approval=approval,
        refused=refused,
    )


def _dataset(ledger: dict[str, Any], cap: float | None) -> DatasetStatus:
    d = ledger["dataset"]
    held = float(ledger["held"])
    return DatasetStatus(
        volume=d["volume"],
        file=d["file"],
        sha256=d["sha256"],
        held=round(held, 6),
        left=round(max(0.0, cap - held), 6) if cap is not None else None,
        jobs=[
            DatasetJob(
                job=job,
                reserved=round(float(e.get("reserved", 0.0)), 6),
                spent=round(float(e.get("spent", 0.0)), 6),
                held_out=round(float(e.get("heldOut", 0.0)), 6),
                finished=bool(e.get("finished", False)),
            )
            for job, e in sorted(ledger.get("jobs", {}).items())
        ],
    )


def site_report(
    settings: OperatorSettings,
    jobs: list[dict[str, Any]],
    ledgers: list[dict[str, Any]],
    ledgers_said: str,
    now: str,
) -> FederatedSiteStatus:
    seen = sorted((_job(j) for j in jobs), key=lambda j: j.job)
    running = sum(j.phase == "Running" for j in seen)
    refused = sum(bool(j.refused) for j in seen)
    waiting = sum(j.approval not in ("", "Approved") for j in seen)
    return FederatedSiteStatus(
        policy=settings.policy,
        epsilon_cap=settings.epsilon_cap,
        data_volume=settings.data_volume_name(),
        data_namespaces=list(settings.data_namespaces),
        datasets=[_dataset(ledger, settings.epsilon_cap) for ledger in ledgers],
        ledgers=ledgers_said,
        jobs=seen,
        summary=f"{len(ledgers)} datasets; {len(seen)} jobs: {running} running, "
        f"{waiting} awaiting approval, {refused} refused",
        updated_at=now,
    )
