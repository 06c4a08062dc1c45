"""The flags of `fedkube aggregator` and `fedkube trainer`, the two pod roles
(``fedkube.cli.pod_roles`` runs them)."""

from __future__ import annotations

import argparse
import os

from fedkube.aggregator.transfer_pace import (
    MIN_TRANSFER_KIB_PER_SECOND,
    UPLOAD_WINDOW_KIB,
    UPLOAD_WINDOW_RANGE_KIB,
)
from fedkube.cli.options import allow_import
from fedkube.cli.pod_roles import cmd_aggregator, cmd_trainer


def aggregator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agg = sub.add_parser("aggregator", help="serve a job's rounds (the aggregator pod)")
    agg.add_argument("--manifest", required=True)
    agg.add_argument("--host", default="0.0.0.0")
    agg.add_argument("--port", type=int, default=0, help="gRPC port (default: spec)")
    agg.add_argument("--http-port", type=int, default=0, help="/metrics and /progress port")
    agg.add_argument(
        "--job-namespace",
        default=os.environ.get("FEDKUBE_JOB_NAMESPACE") or "local",
        help="the job's namespace, as its metrics' fedjob_namespace label (default: local)",
    )
    agg.add_argument("--checkpoint-dir", help="default: spec.checkpoint.path")
    agg.add_argument("--output-dir", help="default: spec.output.path")
    agg.add_argument(
        "--linger-seconds",
        type=float,
        default=1.0,
        help="after the job ends, keep answering /progress this long (for an operator)",
    )
    agg.add_argument("--tls-dir", help="ca.crt, tls.crt, tls.key: require mutual TLS")
    agg.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="accept clear text on a non-loopback address (a mesh encrypts, say)",
    )
    agg.add_argument(
        "--min-transfer-rate",
        type=float,
        default=MIN_TRANSFER_KIB_PER_SECOND,
        metavar="KIB_PER_S",
        help="the least average rate a site's model download or update upload must keep, "
        "after a 10 s grace, or it is dropped and its transfer slot freed (0: no floor)",
    )
    agg.add_argument(
        "--upload-window",
        type=upload_window,
        default=UPLOAD_WINDOW_KIB,
        metavar="KIB",
        help="how much a site may send of its update ahead of the aggregator's reads: an "
        "upload moves at most this per round trip; the aggregator holds up to 4 times it "
        f"(one per transfer slot) (64 to 65536, default {UPLOAD_WINDOW_KIB})",
    )
    agg.add_argument(
        "--statistics-only",
        action="store_true",
        help="run round 0 (the federated statistics) and stop: no training",
    )
    allow_import(agg)
    agg.set_defaults(fn=cmd_aggregator)


def upload_window(text: str) -> int:
    """--upload-window: whole KiB within what gRPC's window takes and memory allows."""
    low, high = UPLOAD_WINDOW_RANGE_KIB
    try:
        kib = int(text)
    except ValueError:
        kib = -1
    if not low <= kib <= high:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a window in KiB from {low} to {high}; the default is "
            f"{UPLOAD_WINDOW_KIB} (4 MiB)"
        )
    return kib


def trainer_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tr = sub.add_parser("trainer", help="train one site (a trainer pod)")
    tr.add_argument("--manifest", required=True)
    tr.add_argument("--site", required=True)
    tr.add_argument("--aggregator", help="host:port (default: spec.aggregator.endpoint)")
    tr.add_argument("--tls-dir", help="ca.crt, tls.crt (this site's), tls.key")
    tr.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="send updates in clear text to a non-loopback aggregator (a private path only)",
    )
    tr.add_argument(
        "--trusted-ca-sha256",
        action="append",
        default=[],
        metavar="HEX",
        help="a CA (SHA-256 of its DER certificate) this site trusts; repeat; the TLS folder's "
        "ca.crt must be one of them",
    )
    tr.add_argument(
        "--terms-sha256",
        help="the digest of the learning terms this site admitted (the operator pins it): a "
        "manifest whose terms differ is refused",
    )
    tr.add_argument(
        "--epsilon-cap",
        type=float,
        help="this site's record-level privacy budget: each job stops at it, and with "
        "--datasets-dir it bounds the sum over every job that reads a dataset",
    )
    tr.add_argument("--state-dir", help="where this site keeps its privacy ledger")
    tr.add_argument(
        "--datasets-dir",
        help="where this site keeps one privacy ledger per dataset, across every job: the job "
        "reserves its planned epsilon there before it trains, and --epsilon-cap bounds the sum",
    )
    tr.add_argument(
        "--dataset-volume",
        default="local",
        help="the name of the site's data volume, part of each dataset's name in the ledgers",
    )
    tr.add_argument(
        "--job-id",
        help="the job's name in the dataset ledgers (the operator gives namespace/name; "
        "default: the manifest's name)",
    )
    tr.add_argument(
        "--audit-log",
        help="append what this trainer sends (each update, evaluation, revealed shares, with "
        "the epsilon spent) to this hash-chained trail; `fedkube audit verify` checks it",
    )
    tr.add_argument(
        "--progress-port",
        type=int,
        default=0,
        help="serve the job's /progress here, asked of the aggregator over this trainer's "
        "(authenticated) channel: for an operator whose job's aggregator is elsewhere",
    )
    tr.add_argument(
        "--progress-linger-seconds",
        type=float,
        default=0.0,
        help="with --progress-port: after the job ends, keep serving its last progress this long",
    )
    tr.add_argument(
        "--personal-dir",
        help="where this site saves its personal model (personalization; default --state-dir)",
    )
    tr.add_argument(
        "--data-dir",
        help="the site's data folder (a pod's data volume): data.file paths are read inside it "
        "and refused when they lead out of it",
    )
    tr.add_argument(
        "--workers-port",
        type=int,
        default=0,
        help="with spec.pods.trainer.workers above 1: wait on this port for the site's worker "
        "pods (`fedkube trainer-worker`) instead of starting the workers beside this process",
    )
    allow_import(tr)
    tr.set_defaults(fn=cmd_trainer)
