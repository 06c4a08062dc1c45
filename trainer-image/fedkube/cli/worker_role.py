"""`fedkube trainer-worker`: one of a site's worker pods (``spec.pods.trainer.workers``). It
joins the site's trainer (rank 0) at its rendezvous, receives the site's training rows from
it, and trains its slice of every batch when told, until the trainer says stop."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedkube.cli.options import allow_import, limit_threads


def cmd_trainer_worker(args: argparse.Namespace) -> int:
    from fedkube.cli.logs import setup_logging
    from fedkube.errors import SpecError
    from fedkube.models.plugins import PluginPolicy
    from fedkube.spec.load import load_job
    from fedkube.trainer.workers import serve

    setup_logging(f"worker[{args.site}/{args.rank}]")
    limit_threads()
    job = load_job(Path(args.manifest))
    if args.site not in {s.name for s in job.spec.sites}:
        raise SpecError(args.manifest, [f"--site: {args.site!r} is not a site of this job"])
    workers = job.spec.pods.trainer.workers
    if not 0 < args.rank < workers:
        raise SpecError(
            args.manifest,
            [f"--rank: {args.rank} is not a worker of spec.pods.trainer.workers {workers}"],
        )
    plugins = PluginPolicy(tuple(args.allow_import))
    return serve(job.spec.task, plugins, args.rank, workers, args.rendezvous)


def worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser(
        "trainer-worker", help="train a slice of a site's batches (a site's worker pod)"
    )
    w.add_argument("--manifest", required=True)
    w.add_argument("--site", required=True)
    w.add_argument("--rank", type=int, required=True, help="1 to spec.pods.trainer.workers - 1")
    w.add_argument(
        "--rendezvous", required=True, help="tcp://host:port of the site's trainer (rank 0)"
    )
    allow_import(w)
    w.set_defaults(fn=cmd_trainer_worker)
