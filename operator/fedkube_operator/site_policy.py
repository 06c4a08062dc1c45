"""What a job may ask of this site: it reaches only what the site admin offered (Helm values,
passed to the operator as ``OperatorSettings``). A job that asks for more is refused before any
pod starts, with a condition naming the field."""

from __future__ import annotations

from pathlib import PurePosixPath

from fedkube.spec.job import FederatedJob

from fedkube_operator.desired import OperatorSettings


def site_policy_problems(job: FederatedJob, settings: OperatorSettings) -> list[str]:
    """Each field of the job that reaches beyond what this site offers, and why."""
    problems = []
    service = job.spec.aggregator.service.type
    local = job.spec.aggregator.endpoint is None
    if local and service not in settings.aggregator_service_types:
        problems.append(
            f"spec.aggregator.service.type: {service} would let other networks reach into this "
            f"cluster, and this site allows {', '.join(settings.aggregator_service_types)} "
            "(Helm value site.aggregatorServiceTypes)"
        )
    for i, site in enumerate(job.spec.sites):
        if site.remote or site.data is None or site.data.file is None:
            continue
        if settings.data_volume() is None:
            problems.append(
                f"spec.sites[{i}].data.file: site {site.name!r} reads its own file, but this "
                "site offers jobs no data volume (Helm value site.data); the site admin decides "
                "which data a job may read"
            )
            continue
        path = PurePosixPath(site.data.file.path)
        if path.is_absolute() or ".." in path.parts:
            problems.append(
                f"spec.sites[{i}].data.file.path: {str(path)!r} leads outside this site's data "
                "volume; give a path relative to it"
            )
    return problems
