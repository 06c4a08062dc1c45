"""A site's consent to one job: the ``SiteApproval`` resource (fedkube.io/v1alpha1,
cluster-scoped, so a tenant with rights in a namespace cannot make one).

The site admin approves a job's learning terms, pinned by their digest (``spec.terms``): a job
whose terms change after approval is no longer approved. An approval may expire
(``expiresAt``); deleting it withdraws the site. ``fedkube approve`` writes one after printing
the terms in words.
"""

from __future__ import annotations

import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from fedkube.spec.base import DNS_LABEL, _Model

APPROVAL_KIND = "SiteApproval"
APPROVAL_PLURAL = "siteapprovals"


class JobReference(_Model):
    namespace: str = Field(pattern=DNS_LABEL, max_length=63, description="The job's namespace.")
    name: str = Field(pattern=DNS_LABEL, max_length=63, description="The FederatedJob's name.")


class SiteApprovalSpec(_Model):
    """A site admin's consent to one job's terms (`fedkube approve`)."""

    job: JobReference = Field(description="The FederatedJob this site consents to.")
    site: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="The site that consents (the cluster's Helm value site.name); none: every "
        "site of the job that trains in this cluster.",
    )
    terms_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="The digest of the job's learning terms approved (fedkube approve prints "
        "them): a job whose terms differ is not approved.",
    )
    expires_at: datetime.datetime | None = Field(
        default=None,
        description="After this time (RFC 3339) the approval admits nothing and the site's "
        "trainers stop.",
    )
    terms: str = Field(
        default="",
        max_length=16384,
        description="The terms in words, as approved: a record for whoever reads it later.",
    )

    def expired(self, now: datetime.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class SiteApprovalMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str


class SiteApproval(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    metadata: SiteApprovalMeta
    spec: SiteApprovalSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def approval_name(namespace: str, job: str, site: str | None) -> str:
    """A name that says what it approves: ``<namespace>.<job>[.<site>]``."""
    return ".".join(p for p in (namespace, job, site) if p)


def approval_document(
    namespace: str,
    job: str,
    site: str | None,
    digest: str,
    words: str,
    expires_at: datetime.datetime | None,
) -> dict[str, Any]:
    spec = SiteApprovalSpec(
        job=JobReference(namespace=namespace, name=job),
        site=site,
        terms_sha256=digest,
        expires_at=expires_at,
        terms=words,
    )
    return {
        "apiVersion": "fedkube.io/v1alpha1",
        "kind": APPROVAL_KIND,
        "metadata": {
            "name": approval_name(namespace, job, site),
            "labels": {"fedkube.io/job-namespace": namespace, "fedkube.io/job": job},
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
