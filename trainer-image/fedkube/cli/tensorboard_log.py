"""A run's rounds as TensorBoard scalars, where a data scientist looks: the global model's
scores, training loss, round time, bytes and privacy per round, and each site's scores.

`fedkube run --tensorboard DIR` writes each round as its line is printed; `fedkube
tensorboard OUTPUT --logdir DIR` writes a finished job's (a local run's output, or what
`fedkube fetch` copied from a cluster) from its result.json. Needs the ``tensorboard`` extra.
Per-site scores exist only for jobs without secure aggregation or differential privacy: a
private job's per-site figures never leave the aggregator, so none are written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fedkube.errors import MissingExtra, OutputError
from fedkube.spec.progress import JobResult, RoundRecord, SiteSummary

# (tag, what of a round) for every round; None values are skipped.
ROUND_SCALARS: list[tuple[str, str]] = [
    ("global/accuracy", "accuracy"),
    ("global/loss", "loss"),
    ("global/auc", "auc"),
    ("global/personal_accuracy", "personal_accuracy"),
    ("train/loss", "train_loss"),
    ("round/duration_seconds", "duration_seconds"),
    ("round/samples", "samples"),
    ("round/bytes_received", "bytes_received"),
    ("round/bytes_sent", "bytes_sent"),
    ("privacy/epsilon", "epsilon"),
]
SITE_SCALARS = ("accuracy", "loss", "auc", "epsilon")


def _writer(logdir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError as e:
        raise MissingExtra("tensorboard", f"TensorBoard logs ({e.name} is missing)") from None
    return SummaryWriter(log_dir=str(logdir))


class RunBoard:
    """One run's TensorBoard log: a scalar per quantity per round."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.writer = _writer(logdir)

    def add_round(self, record: RoundRecord, sites: dict[str, SiteSummary] | None = None) -> None:
        step = record.round
        for tag, field in ROUND_SCALARS:
            value = getattr(record, field)
            if value is not None:
                self.writer.add_scalar(tag, float(value), step, walltime=record.closed_at)
        self.writer.add_scalar("round/sites", len(record.sites), step, walltime=record.closed_at)
        for name, site in (sites or {}).items():
            for field in SITE_SCALARS:
                value = getattr(site, field)
                if value is not None:
                    # One chart per quantity, a line per site.
                    self.writer.add_scalar(f"site_{field}/{name}", float(value), step)

    def close(self) -> None:
        self.writer.close()


def write_result(result: JobResult, logdir: Path) -> int:
    """Every round of a finished job; each site's final scores at the last round."""
    board = RunBoard(logdir)
    try:
        for record in result.history:
            last = record is result.history[-1]
            board.add_round(record, {s.name: s for s in result.sites} if last else None)
    finally:
        board.close()
    return len(result.history)


def read_result(output: Path) -> JobResult:
    from fedkube.aggregator.outputs import RESULT_FILE

    path = output / RESULT_FILE
    try:
        return JobResult.model_validate_json(path.read_bytes())
    except OSError as e:
        raise OutputError(
            f"{path}: cannot read the job's result ({e.strerror or e}); give the output folder "
            "of a finished job (`fedkube run --output`, `fedkube fetch --to`)"
        ) from None
    except ValidationError as e:
        raise OutputError(f"{path}: not a job's result.json: {e.errors()[0]['msg']}") from None


def cmd_tensorboard(args: argparse.Namespace) -> int:
    output = Path(args.output)
    result = read_result(output)
    logdir = Path(args.logdir) if args.logdir else output / "tensorboard"
    rounds = write_result(result, logdir)
    print(f"wrote {rounds} rounds of {result.job} to {logdir}: tensorboard --logdir {logdir}")
    return 0


def tensorboard_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tensorboard",
        help="write a finished job's rounds as TensorBoard scalars",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("output", help="the job's output folder (result.json; `fedkube fetch --to`)")
    p.add_argument("--logdir", help="where to write (default: OUTPUT/tensorboard)")
    p.set_defaults(fn=cmd_tensorboard)
