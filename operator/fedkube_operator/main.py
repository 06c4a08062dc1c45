"""`fedkube-operator`: run the operator (kopf) with its metrics endpoint."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import uuid
from pathlib import Path

import kopf
from fedkube.errors import SpecError
from fedkube.spec.site_policy import SitePolicy, load_site_policy
from fedkube.storage.audit_trail import AuditTrail
from kubernetes import config as kube_config
from prometheus_client import start_http_server

from fedkube_operator import handlers  # noqa: F401 - registers the handlers
from fedkube_operator.job_pod_defaults import JobPodDefaults, load_job_pod_defaults
from fedkube_operator.kube import Kube, LeaseStore
from fedkube_operator.leader import LeaderElection, standby_health
from fedkube_operator.metrics import OperatorMetrics
from fedkube_operator.operator_args import build_parser
from fedkube_operator.settings import OperatorSettings


class RoutineSuccess(logging.Filter):
    """Drops kopf's line for each tick and watch event that went well (a hundred jobs made
    fifty a second); what the operator decided, and every failure, stay."""

    ROUTINE = ("Timer 'on_timer' succeeded.", "Handler 'on_owned_event' succeeded.")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.ROUTINE


def configure_logging(log_format: str) -> None:
    """Text lines, or kopf's JSON (one object per line, with the job it is about)."""
    if log_format == "json":
        kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object")
    else:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s operator %(levelname)s %(message)s",
            force=True,
        )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RoutineSuccess())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format)
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    if args.check:
        return _check(args.namespace or [], args.site_namespace, bool(args.gang_scheduler))
    try:
        policy = load_site_policy(args.site_policy) if args.site_policy else SitePolicy()
        pod_defaults = (
            load_job_pod_defaults(args.job_pod_defaults)
            if args.job_pod_defaults
            else JobPodDefaults()
        )
    except SpecError as e:
        print(f"fedkube-operator: {e}", file=sys.stderr)
        return 2
    if (args.data_claim or args.data_host_path) and not args.site_namespace:
        logging.getLogger("fedkube.operator").warning(
            "the site offers data but no --site-namespace: trainers that read it run in each "
            "job's namespace, with that namespace's Secrets and claims; whoever can create "
            "jobs there is trusted as the site (the chart passes its release namespace)"
        )
    metrics = OperatorMetrics()
    start_http_server(args.metrics_port, registry=metrics.registry)
    memo = kopf.Memo(
        settings=OperatorSettings(
            args.image,
            args.aggregator_host,
            args.progress_host,
            tuple(args.allow_import),
            data_claim=args.data_claim,
            data_host_path=args.data_host_path,
            data_namespaces=tuple(args.data_namespace),
            policy=policy,
            state_claim=args.state_claim,
            site_namespace=args.site_namespace,
            site_tls_secret=args.site_tls_secret,
            progress_key=Path(args.progress_key_file).read_bytes().strip()
            if args.progress_key_file
            else None,
            aggregator_service_types=tuple(args.aggregator_service_type or ["ClusterIP"]),
            job_storage_size=args.job_storage_size,
            job_storage_class=args.job_storage_class,
            epsilon_cap=args.epsilon_cap,
            run_as_user=args.pod_user,
            run_as_group=args.pod_group,
            fs_group=args.pod_fs_group,
            image_pull_policy=args.image_pull_policy,
            image_pull_secrets=tuple(args.image_pull_secret),
            progress_relay_port=args.progress_relay_port,
            site=args.site,
            max_gpus=args.max_gpus,
            gpu_resource=args.gpu_resource,
            allowed_secrets=tuple(args.allow_secret),
            allowed_claims=tuple(args.allow_claim),
            network_policy=args.network_policy,
            operator_namespace=args.operator_namespace,
            aggregator_ingress_cidrs=tuple(args.aggregator_ingress_cidr),
            scrape_namespaces=tuple(args.scrape_namespace),
            remote_aggregator_cidrs=tuple(args.remote_aggregator_cidr or ["0.0.0.0/0"]),
            job_pod_defaults=pod_defaults,
            workers_host=args.workers_host,
            gang_scheduler=args.gang_scheduler,
        ),
        metrics=metrics,
        audit=AuditTrail(Path(args.audit_log)) if args.audit_log else None,
        site_state_dir=Path(args.site_state_dir) if args.site_state_dir else None,
        namespaces=list(args.namespace or []),
        resync_seconds=args.resync_seconds,
        workers=args.workers,
    )
    # kopf names itself after the user (getpass.getuser), and a pod run as an arbitrary uid
    # (the images' 65532, OpenShift's range) has no passwd entry: getuser reads $USER first.
    os.environ.setdefault("USER", "fedkube-operator")
    election = lead(args) if args.leader_election else None
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        memo=memo,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    if election is not None:
        election.release()
    return 0


def lead(args: argparse.Namespace) -> LeaderElection:
    """Return once this replica leads; meanwhile answer the liveness probe as a standby."""
    namespace = args.leader_election_namespace or args.site_namespace
    if not namespace:
        raise SystemExit("fedkube-operator: --leader-election needs --leader-election-namespace")
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    election = LeaderElection(LeaseStore(namespace, args.leader_election_name), identity)
    with standby_health(args.health_port):
        election.wait_until_leader()
    # A leader that could not renew stops: another replica may lead within the lease.
    election.keep_leading(on_lost=lambda: os._exit(1))
    return election


def _check(namespaces: list[str], site_namespace: str, gang: bool = False) -> int:
    kube = Kube()
    problems = kube.missing_permissions(namespaces, site_namespace, gang)
    served = kube.federated_jobs_served(namespaces)
    if served is not None:
        problems.insert(0, served)
    where = ", ".join(namespaces) or "every namespace"
    if problems:
        print(f"fedkube-operator cannot do its work in {where}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(
            "Install the chart's CRD and RBAC (helm upgrade --install), or grant these.",
            file=sys.stderr,
        )
        return 1
    print(f"fedkube-operator: the FederatedJob API answers; every permission is there ({where})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
