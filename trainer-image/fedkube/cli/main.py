"""`fedkube`: run a job locally, validate a manifest, or start one of the two pod roles.

Exit codes: 0 done, 1 the job failed, 2 the input is wrong (manifest, data, model),
130/143 stopped by a signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from fedkube import exit_codes
from fedkube.errors import DataError, FedkubeError, ModelError, SpecError


def _manifest(args: argparse.Namespace) -> Path:
    return Path(args.manifest)


def cmd_validate(args: argparse.Namespace) -> int:
    from fedkube.spec.load import load_job

    job = load_job(_manifest(args))
    s = job.spec
    print(
        f"{args.manifest}: valid FederatedJob {job.name!r}: {len(s.sites)} sites, {s.rounds} "
        f"rounds, strategy {s.strategy.name}, at least {s.min_sites_per_round} sites a round"
    )
    return 0


def cmd_aggregator(args: argparse.Namespace) -> int:
    import asyncio

    from fedkube.aggregator.main import AggregatorOptions, serve
    from fedkube.cli.logs import setup_logging
    from fedkube.spec.load import load_job

    setup_logging("aggregator")
    _limit_threads()
    job = load_job(_manifest(args))
    opts = AggregatorOptions(
        host=args.host,
        port=args.port or job.spec.aggregator.port,
        http_port=args.http_port or job.spec.aggregator.http_port,
        checkpoint_dir=Path(args.checkpoint_dir or job.spec.checkpoint.path),
        output_dir=Path(args.output_dir or job.spec.output.path),
        linger_seconds=args.linger_seconds,
        tls_dir=Path(args.tls_dir) if args.tls_dir else None,
        allow_plaintext=args.allow_plaintext,
        allowed_imports=tuple(args.allow_import),
        statistics_only=args.statistics_only,
    )
    code = asyncio.run(serve(job, opts))
    # Every output is written and closed. Finalising the interpreter would tear down
    # torch's modules, which for a moment takes 100 MiB more than the whole job did (a pod's
    # memory limit sees it): end here instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_trainer(args: argparse.Namespace) -> int:
    from fedkube.cli.logs import setup_logging
    from fedkube.errors import PrivacyBudgetExhausted
    from fedkube.models.plugins import PluginPolicy
    from fedkube.spec.load import load_job
    from fedkube.trainer.site import prepare_site, site_client, site_trainer
    from fedkube.transport.grpc_link import GrpcLink

    setup_logging(f"trainer[{args.site}]")
    _limit_threads()
    manifest = _manifest(args)
    job = load_job(manifest)
    endpoint = _trainer_endpoint(args, job.spec.aggregator.endpoint, job.spec.aggregator.port)
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
        ),
        data_dir=Path(args.data_dir) if args.data_dir else None,
    )
    mutual_tls = job.spec.security.mutual_tls
    link = GrpcLink(
        endpoint,
        tls_dir=Path(args.tls_dir) if args.tls_dir else None,
        consortium=mutual_tls.consortium if mutual_tls is not None else None,
    )
    relay = None
    if args.progress_port:
        from fedkube.trainer.progress_relay import ProgressRelay
        from fedkube.transport.http_endpoints import serve_http

        relay = ProgressRelay(link, job.name, args.site)
        serve_http("0.0.0.0", args.progress_port, None, relay.body)
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
        return 0
    finally:
        if relay is not None:
            # The job's last word, served a while longer for this cluster's operator (the
            # aggregator lingers the same way for its own).
            relay.body(refresh=True)
            time.sleep(args.progress_linger_seconds)
        client.close()
    if not finished.succeeded:
        print(
            f"site {args.site}: the job ended without success: {finished.message}", file=sys.stderr
        )
        return exit_codes.FAILED
    return 0


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


def cmd_certs(args: argparse.Namespace) -> int:
    from fedkube.security.certs import create_consortium

    sites = [s for s in (args.sites or "").split(",") if s]
    if args.manifest:
        from fedkube.spec.load import load_job

        sites += [s.name for s in load_job(Path(args.manifest)).spec.sites if s.name not in sites]
    if not sites:
        print("error: name the sites with --sites a,b,c or --manifest", file=sys.stderr)
        return exit_codes.BAD_INPUT
    out = Path(args.out)
    hosts = [h for h in args.aggregator_host.split(",") if h]
    create_consortium(out, args.consortium, sites, hosts, args.days)
    print(
        f"wrote a CA, the aggregator's certificate ({', '.join(hosts)}) and {len(sites)} site "
        f"certificates to {out}; keep {out / 'ca' / 'ca.key'} offline"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from fedkube.security.revocation import CRL_FILE, revoke

    ca_dir = Path(args.ca_dir)
    crl = Path(args.crl) if args.crl else ca_dir / CRL_FILE
    serial = revoke(ca_dir / "ca.crt", ca_dir / "ca.key", Path(args.cert), crl, args.days)
    print(
        f"revoked serial {serial:x} ({args.cert}); {crl} now lists it: give it to the "
        f"aggregator and to every site as {CRL_FILE} in their TLS folders (a key of each "
        "Secret): the aggregator refuses revoked sites, each site a revoked aggregator"
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
        )
    )


def cmd_stats(args: argparse.Namespace) -> int:
    from fedkube.cli.local_run import LocalRunOptions, run_local

    return run_local(
        LocalRunOptions(
            manifest=_manifest(args),
            output=Path(args.output) if args.output else None,
            quiet=True,
            statistics_only=True,
        )
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from fedkube.cli.model_use import load_trained, predict

    _limit_threads()
    data = Path(args.data)
    out = Path(args.out) if args.out else data.with_name(data.stem + ".predictions.csv")
    rows = predict(load_trained(Path(args.model)), data, out)
    print(f"{rows} rows predicted: {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from fedkube.cli.model_use import evaluate, load_trained

    _limit_threads()
    scores = evaluate(load_trained(Path(args.model)), Path(args.data), args.label_column)
    if args.json:
        print(json.dumps(scores, sort_keys=True))
    else:
        print(
            f"{int(scores['rows'])} rows: accuracy {scores['accuracy']:.2%}, loss "
            f"{scores['loss']:.4f}"
        )
    return 0


def _limit_threads() -> None:
    """One torch thread per process by default: several sites share a few cores."""
    threads = int(os.environ.get("FEDKUBE_TORCH_THREADS", "1"))
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


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


def _allow_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-import",
        action="append",
        default=[],
        metavar="PATTERN",
        help="an import path (module:attribute, shell-style pattern) this site lets a job's "
        "task.model.importPath or task.trainFunction run; repeat for more; none by default",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedkube", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"fedkube {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _run_parser,
        _stats_parser,
        _model_use_parsers,
        _validate_parser,
        _aggregator_parser,
        _trainer_parser,
        _certs_parser,
        _revoke_parser,
    ):
        add(sub)
    return p


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run a job as local processes (aggregator + one per site)")
    run.add_argument("manifest", help="FederatedJob YAML file")
    run.add_argument("--output", help="output folder (default: spec.output.path)")
    run.add_argument("--fresh", action="store_true", help="ignore an earlier checkpoint")
    run.add_argument("--quiet", action="store_true", help="print only the final table")
    run.set_defaults(fn=cmd_run)


def _stats_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = sub.add_parser(
        "stats", help="federated statistics of the sites' data (round 0 alone, no training)"
    )
    stats.add_argument("manifest", help="FederatedJob YAML file")
    stats.add_argument("--output", help="folder (default: spec.output.path/statistics)")
    stats.set_defaults(fn=cmd_stats)


def _model_use_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pred = sub.add_parser("predict", help="apply a trained model to new CSV or Parquet rows")
    pred.add_argument("--model", required=True, help="the job's output folder")
    pred.add_argument("--data", required=True, help="CSV or Parquet file")
    pred.add_argument("--out", help="CSV to write (default: DATA.predictions.csv)")
    pred.set_defaults(fn=cmd_predict)
    ev = sub.add_parser("evaluate", help="score a trained model on a labelled file")
    ev.add_argument("--model", required=True, help="the job's output folder")
    ev.add_argument("--data", required=True, help="CSV or Parquet file with labels")
    ev.add_argument("--label-column", help="default: the training files' label column")
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    ev.set_defaults(fn=cmd_evaluate)


def _validate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    val = sub.add_parser("validate", help="check a manifest and report every problem")
    val.add_argument("manifest")
    val.set_defaults(fn=cmd_validate)


def _aggregator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agg = sub.add_parser("aggregator", help="serve a job's rounds (the aggregator pod)")
    agg.add_argument("--manifest", required=True)
    agg.add_argument("--host", default="0.0.0.0")
    agg.add_argument("--port", type=int, default=0, help="gRPC port (default: spec)")
    agg.add_argument("--http-port", type=int, default=0, help="/metrics and /progress port")
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
        "--statistics-only",
        action="store_true",
        help="run round 0 (the federated statistics) and stop: no training",
    )
    _allow_import(agg)
    agg.set_defaults(fn=cmd_aggregator)


def _trainer_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    tr.add_argument("--epsilon-cap", type=float, help="this site's own record-level privacy budget")
    tr.add_argument("--state-dir", help="where this site keeps its privacy ledger")
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
    _allow_import(tr)
    tr.set_defaults(fn=cmd_trainer)


def _certs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="create a consortium CA and site certificates")
    certs.add_argument("--out", required=True, help="folder to write (ca/, aggregator/, sites/)")
    certs.add_argument("--sites", help="comma-separated site names")
    certs.add_argument("--manifest", help="take the site names from this job")
    certs.add_argument("--consortium", default="fedkube", help="name in the CA certificate")
    certs.add_argument(
        "--aggregator-host",
        default="localhost,127.0.0.1",
        help="names and addresses the aggregator is reached at (certificate SANs)",
    )
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(fn=cmd_certs)


def _revoke_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rev = sub.add_parser(
        "revoke", help="revoke a site's certificate: add it to the consortium's CRL (ca.crl)"
    )
    rev.add_argument("--ca-dir", required=True, help="the CA's folder (ca.crt, ca.key)")
    rev.add_argument("--cert", required=True, help="the certificate to revoke (tls.crt)")
    rev.add_argument("--crl", help="the list to add it to (default: CA folder/ca.crl)")
    rev.add_argument("--days", type=int, default=30, help="until the list's next update")
    rev.set_defaults(fn=cmd_revoke)


def main(argv: list[str] | None = None) -> int:
    from fedkube.cli.launch import die_with_parent_if_asked

    die_with_parent_if_asked()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except (SpecError, DataError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_codes.BAD_INPUT
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
