"""The FederatedJob schema and how manifests are read. Imports no torch, grpc or kopf."""

from fedkube.spec.job import API_GROUP, API_VERSION, KIND, FederatedJob, JobSpec, SiteSpec
from fedkube.spec.load import load_job, parse_job, resolve_path

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
