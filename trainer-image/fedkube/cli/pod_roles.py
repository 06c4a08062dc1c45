"""`fedkube aggregator` and `fedkube trainer`: the two pod roles (and `fedkube run`'s
processes). A trainer trains only the terms its site admitted (``--terms-sha256``) and refuses
clear text away from loopback unless asked for."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedkube import exit_codes
from fedkube.cli.options import limit_threads
from fedkube.errors import SpecError
from fedkube.spec.job import FederatedJob
from fedkube.spec.terms import terms_digest
from fedkube.storage.audit_trail import AuditTrail

if TYPE_CHECKING:  # numpy: an engine dependency; `pip install fedkube` alone has none
    from fedkube.wire.tensors import Params


def cmd_aggregator(args: argparse.Namespace) -> int:
    import asyncio

    from fedkube.aggregator.main import AggregatorOptions, serve
    from fedkube.cli.logs import setup_logging
    from fedkube.spec.load import load_job

    setup_logging("aggregator")
    job = load_job(Path(args.manifest))
    opts = AggregatorOptions(
        host=args.host,
        port=args.port or job.spec.aggregator.port,
        http_port=args.http_port or job.spec.aggregator.http_port,
        checkpoint_dir=Path(args.checkpoint_dir or job.spec.checkpoint.path),
        output_dir=Path(args.output_dir or job.spec.output.path),
        linger_seconds=args.linger_seconds,
        tls_dir=Path(args.tls_dir) if args.tls_dir else None,
        allow_plaintext=args.allow_plaintext,
        statistics_only=args.statistics_only,
        min_transfer_kib=args.min_transfer_rate,
        upload_window_kib=args.upload_window,
        job_namespace=args.job_namespace,
    )
    code = asyncio.run(serve(job, opts, _first_model(job, tuple(args.allow_import))))
    # Every output is written and closed. Finalising the interpreter would tear down
    # torch's modules, which for a moment takes 100 MiB more than the whole job did (a pod's
    # memory limit sees it): end here instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _first_model(job: FederatedJob, allowed: tuple[str, ...]) -> Callable[[int, int], Params]:
    """How the aggregator gets its first model: in a child process, so that it never imports
    torch; in process only where torch is loaded already (`fedkube run`'s forks share it)."""
    if "torch" in sys.modules:
        from fedkube.models.plugins import PluginPolicy
        from fedkube.models.registry import initial_params

        limit_threads()
        return lambda f, c: initial_params(job.spec.task, f, c, PluginPolicy(allowed))
    from fedkube.models.first_model import build_in_child

    return lambda f, c: build_in_child(job.spec.task, f, c, allowed)


def cmd_trainer(args: argparse.Namespace) -> int:
    from fedkube.cli.logs import setup_logging
    from fedkube.errors import PrivacyBudgetExhausted, SiteRefused
    from fedkube.models.plugins import PluginPolicy
    from fedkube.spec.load import load_job
    from fedkube.trainer.audited_link import AuditedLink
    from fedkube.trainer.dataset_admission import DatasetAdmission
    from fedkube.trainer.site import prepare_site, site_client, site_trainer
    from fedkube.transport.grpc_link import GrpcLink
    from fedkube.transport.link import SiteLink

    setup_logging(f"trainer[{args.site}]")
    limit_threads()
    manifest = Path(args.manifest)
    job = load_job(manifest)
    if args.terms_sha256:
        check_admitted_terms(job, args.site, args.terms_sha256)
    if args.trusted_ca_sha256:
        check_trusted_ca(args.site, args.tls_dir, args.trusted_ca_sha256)
    endpoint = _trainer_endpoint(args, job.spec.aggregator.endpoint, job.spec.aggregator.port)
    trail = AuditTrail(Path(args.audit_log)) if args.audit_log else None
    if trail is not None:
        trail.append(
            "trainer started",
            job=job.name,
            site=args.site,
            terms_sha256=terms_digest(job),
            aggregator=endpoint,
        )
    admission = DatasetAdmission(
        Path(args.datasets_dir) if args.datasets_dir else None,
        args.dataset_volume,
        args.job_id or job.name,
        args.epsilon_cap,
    )
    try:
        trainer = prepare_site(
            job,
            args.site,
            manifest,
            lambda data: site_trainer(
                job,
                args.site,
                data,
                plugins=PluginPolicy(tuple(args.allow_import)),
                epsilon_cap=args.epsilon_cap,
                state_dir=Path(args.state_dir) if args.state_dir else None,
                personal_dir=Path(args.personal_dir) if args.personal_dir else None,
                dataset=admission.budget,
                workers_port=args.workers_port or None,
            ),
            data_dir=Path(args.data_dir) if args.data_dir else None,
            admit=admission,
        )
    except SiteRefused as e:
        if trail is not None:
            trail.append("trainer refused", job=job.name, site=args.site, outcome=str(e))
        raise
    mutual_tls = job.spec.security.mutual_tls
    link: SiteLink = GrpcLink(
        endpoint,
        tls_dir=Path(args.tls_dir) if args.tls_dir else None,
        consortium=mutual_tls.consortium if mutual_tls is not None else None,
    )
    if trail is not None:
        link = AuditedLink(link, trail, _spent(job, args.state_dir), job.spec.rounds)
    relay = None
    if args.progress_port:
        from fedkube.trainer.progress_relay import ProgressRelay
        from fedkube.transport.http_endpoints import progress_token, serve_http

        relay = ProgressRelay(link, job.name, args.site)
        serve_http("0.0.0.0", args.progress_port, None, relay.body, progress_token())
    client = site_client(
        job,
        args.site,
        link,
        trainer,
        Path(args.state_dir) if args.state_dir else None,
        Path(args.tls_dir) if args.tls_dir else None,
    )
    try:
        finished = client.run()
    except PrivacyBudgetExhausted as e:
        print(f"site {args.site}: {e}", file=sys.stderr)
        if trail is not None:
            trail.append("trainer stopped", job=job.name, site=args.site, outcome=str(e))
        if admission.budget is not None:
            admission.budget.finish()
        return 0
    finally:
        if relay is not None:
            # The job's last word, served a while longer for this cluster's operator (the
            # aggregator lingers the same way for its own).
            relay.body(refresh=True)
            time.sleep(args.progress_linger_seconds)
        client.close()
    # The job is over here: it holds what it spent of the dataset, not its reservation.
    if admission.budget is not None:
        admission.budget.finish()
    if trail is not None:
        outcome = "the job succeeded" if finished.succeeded else finished.message
        trail.append("trainer stopped", job=job.name, site=args.site, outcome=outcome)
    if not finished.succeeded:
        print(
            f"site {args.site}: the job ended without success: {finished.message}", file=sys.stderr
        )
        return exit_codes.FAILED
    return 0


def _spent(job: FederatedJob, state_dir: str | None) -> Callable[[], float | None]:
    """The record-level epsilon this site's ledger has spent on the job (None without DP)."""
    from fedkube.privacy.ledger import PrivacyLedger
    from fedkube.trainer.site import LEDGER_FILE

    dp = job.spec.privacy.record_level
    if dp is None:
        return lambda: None
    path = Path(state_dir) / LEDGER_FILE if state_dir else None

    def epsilon() -> float | None:
        if path is None or not path.exists():
            return 0.0
        return round(PrivacyLedger(dp.delta, None, path).epsilon, 6)

    return epsilon


def check_admitted_terms(job: FederatedJob, site: str, admitted: str) -> None:
    """The job this trainer read is the one its site admitted (the operator pins the digest
    of the learning terms in the pod): not a ConfigMap edited since, nor a changed job."""
    read = terms_digest(job)
    if read != admitted.lower():
        raise SpecError(
            f"site {site}",
            [
                f"(manifest): its learning terms (sha256 {read[:16]}...) are not the ones this "
                f"site admitted (sha256 {admitted[:16]}...): the job's ConfigMap was edited, or "
                "the job changed after the site admitted it. The site trains only what it "
                "admitted; apply the job again for the site to judge it"
            ],
        )


def check_trusted_ca(site: str, tls_dir: str | None, pins: list[str]) -> None:
    """The CA this trainer would trust is one its site pinned (a Secret a tenant made holds
    a CA of the tenant's): checked before anything connects or reads a row. Bad input, not a
    failure a retry could mend."""
    from fedkube.security.certs import ca_fingerprint

    setting = "(Helm value site.policy.mutualTls.trustedCaSha256)"
    if tls_dir is None:
        problem = f"this site trusts only the CAs it pinned {setting}; no TLS folder was given"
        raise SpecError(f"site {site}", [f"--tls-dir: {problem}"])
    found = ca_fingerprint(Path(tls_dir))
    if found not in {p.lower() for p in pins}:
        raise SpecError(
            f"site {site}",
            [
                f"{Path(tls_dir) / 'ca.crt'}: a CA (sha256 {found[:16]}...) this site does not "
                f"trust {setting}: the Secret was not made from the consortium's CA; the site "
                "sends nothing to whoever holds it"
            ],
        )


def _trainer_endpoint(args: argparse.Namespace, endpoint: str | None, port: int) -> str:
    """Where the trainer dials; clear text only to loopback, or when asked for."""
    from fedkube.security.tls import TlsError, endpoint_host, is_loopback

    target: str = args.aggregator or endpoint or f"localhost:{port}"
    if args.tls_dir is None and not (args.allow_plaintext or is_loopback(endpoint_host(target))):
        raise TlsError(
            f"site {args.site}: the trainer would send its updates to {target} in clear text: "
            "give --tls-dir (mutual TLS), or pass --allow-plaintext if the path is private "
            "(an in-cluster Service, a mesh that encrypts)"
        )
    return target
