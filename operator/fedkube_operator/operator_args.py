"""`fedkube-operator`'s command line: each flag is a value of the chart's (Helm passes them)
or of the environment, for an operator run outside the chart."""

from __future__ import annotations

import argparse
import os

from fedkube_operator.settings import OperatorSettings


def _id_or_none(value: str) -> int | None:
    """A user or group id, or none (the platform assigns one)."""
    if value.strip().lower() in ("", "none", "null"):
        return None
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"a user or group id is not negative: {value}")
    return number


def _epsilon_cap(value: str) -> float:
    """A privacy budget: above 0 (0 would let no job train; the chart's schema says so too)."""
    cap = float(value)
    if not cap > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"a privacy budget is a number above 0: {value}")
    return cap


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fedkube-operator",
        description="Run the fedkube operator (kopf) with its metrics endpoint.",
    )
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
        "--workers-host",
        default=os.environ.get("FEDKUBE_WORKERS_HOST", OperatorSettings.workers_host),
        help="host a site's worker pods dial for its trainer ({service}, {namespace} filled in)",
    )
    ap.add_argument(
        "--gang-scheduler",
        default="",
        help="the scheduler that places a site's worker pods together or not at all "
        "(its schedulerName; pods get its scheduling.x-k8s.io/pod-group label); none by default",
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
        "--resync-seconds",
        type=float,
        default=float(os.environ.get("FEDKUBE_RESYNC_SECONDS", "30")),
        help="reconcile each job in full at least this often; between, only when its "
        "aggregator's progress, its objects or the site's approvals change (0: on every 2 s "
        "tick, the load bench's baseline)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("FEDKUBE_WORKERS", "16")),
        help="threads for the jobs' reconciles and /progress reads (default 16)",
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
        type=_epsilon_cap,
        # A string default goes through ``type`` too: a bad variable is refused as the flag is.
        default=os.environ.get("FEDKUBE_EPSILON_CAP") or None,
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
    ap.add_argument(
        "--leader-election",
        action="store_true",
        default=os.environ.get("FEDKUBE_LEADER_ELECTION", "") in ("1", "true"),
        help="several replicas: the one holding a Lease reconciles, the others stand by and "
        "take over within about 12 s of the leader's last renewal",
    )
    ap.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        help="where the Lease is (default: the operator's own namespace, POD_NAMESPACE)",
    )
    ap.add_argument(
        "--leader-election-name",
        default="fedkube-operator",
        help="the Lease's name: one per release",
    )
    return ap
