"""What several commands share: the site's plug-in allow-list flag and torch's threads."""

from __future__ import annotations

import argparse
import os

SITE_ALLOWS = (
    "an import path (module:attribute, shell-style pattern) this site lets a job's "
    "task.model.importPath or task.trainFunction run; repeat for more; none by default"
)
USER_ALLOWS = (
    "an import path (module:attribute, shell-style pattern) to run besides those of the "
    "manifest whose module is in its own folder (or the model's); repeat for more"
)


def allow_import(parser: argparse.ArgumentParser, help: str = SITE_ALLOWS) -> None:
    parser.add_argument("--allow-import", action="append", default=[], metavar="PATTERN", help=help)


def limit_threads() -> None:
    """One torch thread per process by default: several sites share a few cores."""
    threads = int(os.environ.get("FEDKUBE_TORCH_THREADS", "1"))
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
