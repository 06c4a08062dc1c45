"""Starting fedkube's own processes on this machine: `fedkube run`'s children, and the tests'."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from fedkube.processes import PARENT_ENV, child_env, die_with_parent_if_asked, free_port

__all__ = ["PARENT_ENV", "die_with_parent_if_asked", "free_port", "spawn_fedkube"]


def spawn_fedkube(
    args: list[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """``python -m fedkube ARGS`` with one torch thread, its output to ``log``. In a session
    of its own (Ctrl-C reaches the parent alone, which stops children in order)."""
    full_env = child_env(dict(os.environ if env is None else env))
    full_env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log, "ab" if append else "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fedkube", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=new_session,
        )
