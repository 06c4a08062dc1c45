"""What a job may ask of this site: it reaches only what the site admin offered (Helm values,
passed to the operator as ``OperatorSettings``), and it reads the site's data only on the terms
of the site's policy (Helm site.policy) and from the namespaces the admin named (Helm
site.data.namespaces). A job that asks for more is refused before any pod starts, with a
condition naming the field and the Helm value."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import PurePosixPath

from fedkube.spec.job import FederatedJob
from fedkube.spec.site_policy import data_reading_sites, policy_refusals

from fedkube_operator.settings import OperatorSettings

HELM_POLICY = "Helm value site.policy."


def site_policy_problems(
    job: FederatedJob, settings: OperatorSettings, namespace: str = ""
) -> list[str]:
    """Each field of the job that reaches beyond what this site offers, and why."""
    problems = _offer_problems(job, settings)
    reading = data_reading_sites(job, local_only=True)
    if reading and settings.data_volume() is not None:
        problems += _namespace_problems(job, settings, namespace, reading)
        problems += _identity_problems(job, settings, reading)
        problems += [r.text(HELM_POLICY) for r in policy_refusals(job, settings.policy, reading)]
    return problems


def _namespace_problems(
    job: FederatedJob, settings: OperatorSettings, namespace: str, reading: list[int]
) -> list[str]:
    if _allowed(namespace, settings.data_namespaces):
        return []
    first = reading[0]
    allowed = ", ".join(settings.data_namespaces) or "none yet"
    return [
        f"spec.sites[{first}].data.file: site {job.spec.sites[first].name!r} would read this "
        f"site's data volume from namespace {namespace!r}, which the site admin has not let "
        f"use it (allowed: {allowed}) (Helm value site.data.namespaces)"
    ]


def _identity_problems(
    job: FederatedJob, settings: OperatorSettings, reading: list[int]
) -> list[str]:
    """A trainer that reads the site's data presents the site's certificate and trusts the
    site's CA, both in a Secret of the site's namespace: a job cannot name another."""
    tls = job.spec.security.mutual_tls
    if tls is None or not settings.site_namespace:
        return []
    names = [job.spec.sites[i].name for i in reading]
    return [
        f"spec.security.mutualTls.siteSecretNames.{site}: {tls.site_secret_names[site]!r}; "
        f"site {site!r} reads this site's data, and its trainer presents the site's own "
        f"certificate, Secret {settings.site_secret(site)!r} in namespace "
        f"{settings.site_namespace!r} (Helm value site.tls.secretName); leave the name out"
        for site in names
        if site in tls.site_secret_names
    ]


def _offer_problems(job: FederatedJob, settings: OperatorSettings) -> list[str]:
    """What the job names of the cluster (Service type, claims, Secrets, GPUs, sites, paths)
    beyond what the site offers."""
    problems = []
    service = job.spec.aggregator.service.type
    local = job.spec.aggregator.endpoint is None
    if local and service not in settings.aggregator_service_types:
        problems.append(
            f"spec.aggregator.service.type: {service} would let other networks reach into this "
            f"cluster, and this site allows {', '.join(settings.aggregator_service_types)} "
            "(Helm value site.aggregatorServiceTypes)"
        )
    claim = job.spec.checkpoint.claim_name
    if claim is not None and not _allowed(claim, settings.allowed_claims):
        problems.append(
            f"spec.checkpoint.claimName: {claim!r} is not a claim this site lets jobs write "
            "their model to (Helm value jobStorage.allowedClaims); leave it out for the job's "
            "own claim"
        )
    tls = job.spec.security.mutual_tls
    if tls is not None:
        named = [("aggregatorSecretName", tls.aggregator_secret_name)] + [
            (f"siteSecretNames.{site}", secret) for site, secret in tls.site_secret_names.items()
        ]
        for field, secret in named:
            if secret is not None and not _allowed(secret, settings.allowed_secrets):
                problems.append(
                    f"spec.security.mutualTls.{field}: {secret!r} is not a Secret this site "
                    "offers jobs (Helm value site.tlsSecrets); leave it out for the "
                    "conventional <job>-aggregator-tls or <job>-<site>-tls"
                )
    gpus = job.spec.pods.trainer.gpus
    if gpus > settings.max_gpus:
        offered = f"{settings.max_gpus}" if settings.max_gpus else "none"
        problems.append(
            f"spec.pods.trainer.gpus: the job asks {gpus} GPU(s) for each trainer and this site "
            f"offers {offered} (Helm value site.gpus)"
        )
    for i, site in enumerate(job.spec.sites):
        if settings.site and not site.remote and site.name != settings.site:
            problems.append(
                f"spec.sites[{i}].remote: this cluster is site {settings.site!r} (Helm value "
                f"site.name) and trains for no other; mark {site.name!r} remote: true (it trains "
                "in its own cluster)"
            )
            continue
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


def _allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """A name the site offers: one of its names or shell-style patterns ("ward-*")."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)
