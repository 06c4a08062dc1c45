"""`fedkube-operator`: run the operator (kopf) with its metrics endpoint."""

from __future__ import annotations

import argparse
import logging
import os

import kopf
from kubernetes import config as kube_config
from prometheus_client import start_http_server

from fedkube_operator import handlers  # noqa: F401 - registers the handlers
from fedkube_operator.desired import OperatorSettings
from fedkube_operator.metrics import OperatorMetrics


def _id_or_none(value: str) -> int | None:
    """A user or group id, or none (the platform assigns one)."""
    if value.strip().lower() in ("", "none", "null"):
        return None
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"a user or group id is not negative: {value}")
    return number


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
        "--state-claim",
        default=os.environ.get("FEDKUBE_STATE_CLAIM") or None,
        help="a PersistentVolumeClaim where trainers keep their privacy ledgers across pods",
    )
    ap.add_argument(
        "--epsilon-cap",
        type=float,
        default=float(os.environ["FEDKUBE_EPSILON_CAP"])
        if os.environ.get("FEDKUBE_EPSILON_CAP")
        else None,
        help="this site's own record-level privacy budget, passed to its trainers",
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s operator %(levelname)s %(message)s")
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
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
            state_claim=args.state_claim,
            aggregator_service_types=tuple(args.aggregator_service_type or ["ClusterIP"]),
            job_storage_size=args.job_storage_size,
            job_storage_class=args.job_storage_class,
            epsilon_cap=args.epsilon_cap,
            run_as_user=args.pod_user,
            run_as_group=args.pod_group,
            fs_group=args.pod_fs_group,
        ),
        metrics=metrics,
    )
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        memo=memo,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
