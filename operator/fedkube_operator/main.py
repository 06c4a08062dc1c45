"""`fedkube-operator`: run the operator (kopf) with its metrics endpoint."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import kopf
from fedkube.errors import SpecError
from fedkube.spec.site_policy import SitePolicy, load_site_policy
from fedkube.storage.audit_trail import AuditTrail
from kubernetes import config as kube_config
from prometheus_client import start_http_server

from fedkube_operator import handlers  # noqa: F401 - registers the handlers
from fedkube_operator.job_pod_defaults import JobPodDefaults, load_job_pod_defaults
from fedkube_operator.kube import Kube
from fedkube_operator.metrics import OperatorMetrics
from fedkube_operator.settings import OperatorSettings


def _id_or_none(value: str) -> int | None:
    """A user or group id, or none (the platform assigns one)."""
    if value.strip().lower() in ("", "none", "null"):
        return None
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"a user or group id is not negative: {value}")
    return number


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fedkube-operator", description=__doc__)
    ap.add_argument("--namespace", action="append", help="watch only these (default: all)")
    ap.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("FEDKUBE_METRICS_PORT", "8080"))
    )
    ap.add_argument(
        "--health-port", type=int, default=int(os.environ.get("FEDKUBE_HEALTH_PORT", "8081"))
    )
    ap.add_argument("--image", default=os.environ.get("FEDKUBE_IMAGE", OperatorSettings.image))
    ap.add_argument(
        "--image-pull-policy",
        choices=["Always", "IfNotPresent", "Never"],
        default=os.environ.get("FEDKUBE_IMAGE_PULL_POLICY") or None,
        help="the job pods' imagePullPolicy (default: Kubernetes's)",
    )
    ap.add_argument(
        "--site",
        default=os.environ.get("FEDKUBE_SITE") or None,
        help="this cluster's site: only its trainer runs here, and a job that lists another "
        "site as training here is refused (default: every site a job lists)",
    )
    ap.add_argument(
        "--max-gpus",
        type=int,
        default=int(os.environ.get("FEDKUBE_MAX_GPUS", "0")),
        help="GPUs a job's trainer pod may ask for here (spec.pods.trainer.gpus); default 0",
    )
    ap.add_argument(
        "--gpu-resource",
        default=os.environ.get("FEDKUBE_GPU_RESOURCE", OperatorSettings.gpu_resource),
        help="the extended resource a GPU is asked by (default nvidia.com/gpu)",
    )
    ap.add_argument(
        "--allow-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="a Secret (name or shell-style pattern) a job may name for its certificates "
        "(spec.security.mutualTls), besides the conventional <job>-aggregator-tls and "
        "<job>-<site>-tls",
    )
    ap.add_argument(
        "--allow-claim",
        action="append",
        default=[],
        metavar="NAME",
        help="a claim (name or shell-style pattern) a job may name for its model and "
        "checkpoints (spec.checkpoint.claimName)",
    )
    ap.add_argument(
        "--network-policy",
        action="store_true",
        default=os.environ.get("FEDKUBE_NETWORK_POLICY", "") == "true",
        help="give each job NetworkPolicies: trainers reach only the aggregator, which "
        "accepts only its trainers and the CIDRs below",
    )
    ap.add_argument(
        "--operator-namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        help="the operator's namespace, let in to the aggregators' /progress",
    )
    ap.add_argument(
        "--site-namespace",
        default=os.environ.get("FEDKUBE_SITE_NAMESPACE", ""),
        help="the site's own namespace (the chart's: its release namespace), where trainers "
        "that read the site's data run, beside its data and state claims and its certificate; "
        "empty: they run in the job's namespace (a cluster whose tenants are the site)",
    )
    ap.add_argument(
        "--progress-key-file",
        default=os.environ.get("FEDKUBE_PROGRESS_KEY_FILE") or None,
        metavar="FILE",
        help="the operator's key (the chart's Secret): each job's /progress token is made "
        "from it, and its aggregator answers only the operator; without it, any pod that "
        "reaches the aggregator reads its progress",
    )
    ap.add_argument(
        "--site-tls-secret",
        default=os.environ.get("FEDKUBE_SITE_TLS_SECRET", OperatorSettings.site_tls_secret),
        help="the site's certificate: a Secret (ca.crt, tls.crt, tls.key) in --site-namespace "
        "that its trainers mount under mutual TLS; {site} is filled in",
    )
    ap.add_argument(
        "--aggregator-ingress-cidr",
        action="append",
        default=[],
        help="addresses of other organisations' trainers, let in to an aggregator here",
    )
    ap.add_argument(
        "--scrape-namespace",
        action="append",
        default=[],
        help="a namespace whose pods may scrape the aggregators' /metrics",
    )
    ap.add_argument(
        "--remote-aggregator-cidr",
        action="append",
        default=[],
        help="addresses trainers here may dial for an aggregator at another organisation "
        "(default 0.0.0.0/0, on the endpoint's port only)",
    )
    ap.add_argument(
        "--image-pull-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="a docker-registry Secret (in the job's namespace) job pods pull the image with",
    )
    ap.add_argument(
        "--progress-relay-port",
        type=int,
        default=int(os.environ.get("FEDKUBE_PROGRESS_RELAY_PORT", "9092")),
        help="where a trainer of a job whose aggregator is elsewhere serves the job's "
        "progress to this operator (relayed over its authenticated channel)",
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="check this operator's access (the FederatedJob API, every permission it needs) "
        "and exit: 0 when all is there (the chart's helm test)",
    )
    ap.add_argument(
        "--allow-import",
        action="append",
        default=[],
        metavar="PATTERN",
        help="an import path (module:attribute, shell-style pattern) this site lets a job's "
        "model or training function come from; passed to the job's pods; none by default",
    )
    ap.add_argument(
        "--aggregator-host",
        default=os.environ.get("FEDKUBE_AGGREGATOR_HOST", OperatorSettings.aggregator_host),
        help="host trainers dial for an in-cluster aggregator ({service}, {namespace} filled in)",
    )
    ap.add_argument(
        "--progress-host",
        default=os.environ.get("FEDKUBE_PROGRESS_HOST", ""),
        help="host to poll the aggregator's /progress on (default: its pod IP)",
    )
    ap.add_argument(
        "--data-claim",
        default=os.environ.get("FEDKUBE_DATA_CLAIM") or None,
        help="the PersistentVolumeClaim holding this site's data, mounted read-only in trainers",
    )
    ap.add_argument(
        "--data-host-path",
        default=os.environ.get("FEDKUBE_DATA_HOST_PATH") or None,
        help="or a node folder holding it (hostPath: the restricted Pod Security Standard "
        "refuses it)",
    )
    ap.add_argument(
        "--data-namespace",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a namespace (name or shell-style pattern) whose jobs may read the site's data "
        "volume; none by default",
    )
    ap.add_argument(
        "--site-policy",
        default=os.environ.get("FEDKUBE_SITE_POLICY") or None,
        metavar="FILE",
        help="the site's policy (YAML, Helm site.policy): what a job must promise before it "
        "reads the site's data; default: DP, secure aggregation and mutual TLS required",
    )
    ap.add_argument(
        "--job-pod-defaults",
        default=os.environ.get("FEDKUBE_JOB_POD_DEFAULTS") or None,
        metavar="FILE",
        help="the site's defaults for job pods (YAML, Helm jobPods): resources per role, "
        "priority and runtime class, labels, annotations, topology spread",
    )
    ap.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("FEDKUBE_LOG_FORMAT", "text"),
        help="text lines, or one JSON object per line for a log collector (kopf's own)",
    )
    ap.add_argument(
        "--audit-log",
        default=os.environ.get("FEDKUBE_AUDIT_LOG") or None,
        metavar="FILE",
        help="the site's hash-chained audit trail (JSON lines): every job admitted or refused, "
        "approved, withdrawn, every pod made or deleted; `fedkube audit verify FILE` checks it",
    )
    ap.add_argument(
        "--state-claim",
        default=os.environ.get("FEDKUBE_STATE_CLAIM") or None,
        help="a PersistentVolumeClaim where trainers keep their privacy ledgers across pods",
    )
    ap.add_argument(
        "--site-state-dir",
        default=os.environ.get("FEDKUBE_SITE_STATE_DIR") or None,
        metavar="DIR",
        help="the datasets/ folder of the site's state claim, mounted here (read-only): the "
        "site's status (FederatedSite) shows each dataset's budget from its ledgers",
    )
    ap.add_argument(
        "--epsilon-cap",
        type=float,
        default=float(os.environ["FEDKUBE_EPSILON_CAP"])
        if os.environ.get("FEDKUBE_EPSILON_CAP")
        else None,
        help="this site's privacy budget per dataset, summed over every job that reads it "
        "(with --state-claim and a data volume; otherwise a cap on each job), passed to its "
        "trainers",
    )
    ap.add_argument(
        "--aggregator-service-type",
        action="append",
        choices=["ClusterIP", "NodePort", "LoadBalancer"],
        help="a Service type a job's aggregator may have here (default: ClusterIP only)",
    )
    ap.add_argument(
        "--job-storage-size",
        default=os.environ.get("FEDKUBE_JOB_STORAGE_SIZE", OperatorSettings.job_storage_size),
        help="the size of each job's own claim for its model, result and checkpoints",
    )
    ap.add_argument(
        "--job-storage-class",
        default=os.environ.get("FEDKUBE_JOB_STORAGE_CLASS", ""),
        help="its StorageClass (default: the cluster's default class)",
    )
    for flag, env, default in (
        ("--pod-user", "FEDKUBE_POD_USER", OperatorSettings.run_as_user),
        ("--pod-group", "FEDKUBE_POD_GROUP", OperatorSettings.run_as_group),
        ("--pod-fs-group", "FEDKUBE_POD_FS_GROUP", OperatorSettings.fs_group),
    ):
        ap.add_argument(
            flag,
            type=_id_or_none,
            default=_id_or_none(os.environ.get(env, str(default))),
            help="the job pods' id; 'none' leaves it to the platform (OpenShift)",
        )
    args = ap.parse_args(argv)
    configure_logging(args.log_format)
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    if args.check:
        return _check(args.namespace or [], args.site_namespace)
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
        ),
        metrics=metrics,
        audit=AuditTrail(Path(args.audit_log)) if args.audit_log else None,
        site_state_dir=Path(args.site_state_dir) if args.site_state_dir else None,
        namespaces=list(args.namespace or []),
    )
    # kopf names itself after the user (getpass.getuser), and a pod run as an arbitrary uid
    # (the images' 65532, OpenShift's range) has no passwd entry: getuser reads $USER first.
    os.environ.setdefault("USER", "fedkube-operator")
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        memo=memo,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    return 0


def _check(namespaces: list[str], site_namespace: str) -> int:
    kube = Kube()
    problems = kube.missing_permissions(namespaces, site_namespace)
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
