"""An earlier fedkube engine, taken from this repository's git history and run as a process
beside the current one: what an older trainer or aggregator really does on the wire."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def engine_at(commit: str, into: Path) -> Path:
    """``trainer-image/fedkube`` at ``commit``, unpacked under ``into``: a PYTHONPATH entry.
    Skips the test where the clone lacks that history."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    if found.returncode != 0:
        pytest.skip(f"needs the git history to commit {commit[:12]} (a full clone)")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "trainer-image/fedkube"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "trainer-image"


def ask(tree: Path, code: str) -> str:
    """What ``code`` prints, run by Python with the earlier engine on its path."""
    said = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return said.stdout.strip()
