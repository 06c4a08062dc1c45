"""The FederatedJob schema and how manifests are read. Imports no torch, grpc or kopf."""

from fedkube.spec.base import API_GROUP, API_VERSION, KIND
from fedkube.spec.job import FederatedJob, JobSpec
from fedkube.spec.load import load_job, parse_job, resolve_path
from fedkube.spec.sites import SiteSpec

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "FederatedJob",
    "JobSpec",
    "SiteSpec",
    "load_job",
    "parse_job",
    "resolve_path",
]
