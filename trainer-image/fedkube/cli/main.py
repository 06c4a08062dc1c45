"""`fedkube`: run a job locally, validate a manifest, or start one of the two pod roles.

Exit codes: 0 done, 1 the job failed, 2 the input is wrong (manifest, data, model),
130/143 stopped by a signal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkube import exit_codes
from fedkube.cli.approve import approve_parser
from fedkube.cli.audit import audit_parser
from fedkube.cli.budget import budget_parser
from fedkube.cli.certificates import certs_parser, revoke_parser
from fedkube.cli.completion import completion_parser
from fedkube.cli.examples import examples_parser
from fedkube.cli.fetch import fetch_parser
from fedkube.cli.help_examples import add_examples
from fedkube.cli.options import USER_ALLOWS, allow_import, limit_threads
from fedkube.cli.output_server import serve_output_parser
from fedkube.cli.pod_role_flags import aggregator_parser, trainer_parser
from fedkube.cli.tensorboard_log import tensorboard_parser
from fedkube.cli.worker_role import worker_parser
from fedkube.errors import (
    DataError,
    FedkubeError,
    MissingExtra,
    ModelError,
    OutputError,
    SiteRefused,
    SpecError,
)


def _manifest(args: argparse.Namespace) -> Path:
    return Path(args.manifest)


def cmd_validate(args: argparse.Namespace) -> int:
    import json

    from fedkube.spec.load import load_job

    try:
        job = load_job(_manifest(args))
    except SpecError as e:
        if not args.json:
            raise
        print(json.dumps({"valid": False, "source": e.source, "problems": e.problems}))
        return exit_codes.BAD_INPUT
    s = job.spec
    if args.json:
        summary = {
            "valid": True,
            "job": job.name,
            "sites": [site.name for site in s.sites],
            "rounds": s.rounds,
            "strategy": s.strategy.name,
            "minSitesPerRound": s.min_sites_per_round,
        }
        print(json.dumps(summary))
        return 0
    print(
        f"{args.manifest}: valid FederatedJob {job.name!r}: {len(s.sites)} sites, {s.rounds} "
        f"rounds, strategy {s.strategy.name}, at least {s.min_sites_per_round} sites a round"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fedkube.cli.local_run import LocalRunOptions, run_local

    return run_local(
        LocalRunOptions(
            manifest=_manifest(args),
            output=Path(args.output) if args.output else None,
            fresh=args.fresh,
            quiet=args.quiet,
            out=sys.stderr if args.json else sys.stdout,
            site_policy=Path(args.site_policy) if args.site_policy else None,
            allow_import=tuple(args.allow_import),
            entry=main,
            json_output=args.json,
            tensorboard=Path(args.tensorboard) if args.tensorboard else None,
        )
    )


def cmd_stats(args: argparse.Namespace) -> int:
    from fedkube.cli.local_run import LocalRunOptions, run_local

    return run_local(
        LocalRunOptions(
            manifest=_manifest(args),
            output=Path(args.output) if args.output else None,
            quiet=True,
            out=sys.stderr if args.json else sys.stdout,
            statistics_only=True,
            site_policy=Path(args.site_policy) if args.site_policy else None,
            entry=main,
            json_output=args.json,
        )
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from fedkube.cli.model_use import load_trained, predict

    limit_threads()
    data = Path(args.data)
    out = Path(args.out) if args.out else data.with_name(data.stem + ".predictions.csv")
    rows = predict(load_trained(Path(args.model), tuple(args.allow_import)), data, out)
    print(f"{rows} rows predicted: {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from fedkube.cli.model_use import evaluate, load_trained

    limit_threads()
    model = load_trained(Path(args.model), tuple(args.allow_import))
    scores = evaluate(model, Path(args.data), args.label_column)
    if args.json:
        print(json.dumps(scores, sort_keys=True))
    else:
        print(
            f"{int(scores['rows'])} rows: accuracy {scores['accuracy']:.2%}, loss "
            f"{scores['loss']:.4f}"
        )
    return 0


def _version() -> str:
    """The installed distribution's version (what pip and the images' labels say)."""
    from importlib.metadata import PackageNotFoundError, version

    from fedkube import __version__

    try:
        return version("fedkube")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


# What `pip install fedkube` leaves out: the engine's heavy dependencies (the operator's
# image installs fedkube without them).
_ENGINE_PACKAGES = {
    "torch", "numpy", "grpc", "safetensors", "sklearn", "pandas", "pyarrow", "cryptography",
    "dp_accounting", "opacus", "matplotlib",
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedkube", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"fedkube {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _run_parser,
        _stats_parser,
        _model_use_parsers,
        _validate_parser,
        examples_parser,
        fetch_parser,
        serve_output_parser,
        aggregator_parser,
        trainer_parser,
        worker_parser,
        certs_parser,
        revoke_parser,
        approve_parser,
        audit_parser,
        budget_parser,
        tensorboard_parser,
        completion_parser,
    ):
        add(sub)
    add_examples(p)
    p.set_defaults(root_parser=p)  # `fedkube completion` reads every command from it
    return p


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run a job as local processes (aggregator + one per site)")
    run.add_argument("manifest", help="FederatedJob YAML file")
    run.add_argument("--output", help="output folder (default: spec.output.path)")
    run.add_argument("--fresh", action="store_true", help="ignore an earlier checkpoint")
    run.add_argument("--quiet", action="store_true", help="print only the final table")
    _json_flag(run, "the result (result.json's document) on stdout; the table on stderr")
    run.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write each round's scalars for TensorBoard here (the tensorboard extra)",
    )
    _site_policy_flag(run)
    allow_import(run, USER_ALLOWS)
    run.set_defaults(fn=cmd_run)


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"for scripts: {what}")


def _site_policy_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site-policy",
        metavar="FILE",
        help="a site's policy (the YAML of its Helm value site.policy): refuse the job as that "
        "site's operator would, before anything starts",
    )


def _stats_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = sub.add_parser(
        "stats", help="federated statistics of the sites' data (round 0 alone, no training)"
    )
    stats.add_argument("manifest", help="FederatedJob YAML file")
    stats.add_argument("--output", help="folder (default: spec.output.path/statistics)")
    _json_flag(stats, "the statistics (statistics.json's document) on stdout")
    _site_policy_flag(stats)
    stats.set_defaults(fn=cmd_stats)


def _model_use_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pred = sub.add_parser("predict", help="apply a trained model to new CSV or Parquet rows")
    pred.add_argument("--model", required=True, help="the job's output folder")
    pred.add_argument("--data", required=True, help="CSV or Parquet file")
    pred.add_argument("--out", help="CSV to write (default: DATA.predictions.csv)")
    allow_import(pred, USER_ALLOWS)
    pred.set_defaults(fn=cmd_predict)
    ev = sub.add_parser("evaluate", help="score a trained model on a labelled file")
    ev.add_argument("--model", required=True, help="the job's output folder")
    ev.add_argument("--data", required=True, help="CSV or Parquet file with labels")
    ev.add_argument("--label-column", help="default: the training files' label column")
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    allow_import(ev, USER_ALLOWS)
    ev.set_defaults(fn=cmd_evaluate)


def _validate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    val = sub.add_parser("validate", help="check a manifest and report every problem")
    val.add_argument("manifest")
    _json_flag(val, '{"valid": true, ...} or {"valid": false, "problems": [...]} on stdout')
    val.set_defaults(fn=cmd_validate)


def main(argv: list[str] | None = None) -> int:
    from fedkube.cli.launch import die_with_parent_if_asked

    die_with_parent_if_asked()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except (SpecError, DataError, ModelError, OutputError, MissingExtra) as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except SiteRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_codes.REFUSED_BY_SITE
    except FedkubeError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_codes.FAILED
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in _ENGINE_PACKAGES:
            raise
        print(
            f"error: `fedkube {args.command}` needs the engine's dependencies ({e.name} is "
            "missing): pip install 'fedkube[engine]'",
            file=sys.stderr,
        )
        return exit_codes.BAD_INPUT
    return code


if __name__ == "__main__":
    sys.exit(main())
