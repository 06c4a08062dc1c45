"""Starting fedkube's own processes on this machine: `fedkube run`'s children, and the tests'."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# Set for a child that must not outlive its parent; the child arms it itself at start
# (die_with_parent_if_asked), since running Python between fork and exec (preexec_fn) can
# deadlock a parent that has other threads, such as gRPC's.
PARENT_ENV = "FEDKUBE_PARENT_PID"


def die_with_parent_if_asked() -> None:
    """In a child started by ``spawn_fedkube``: get SIGTERM when the parent dies, so no
    trainer outlives its run; exit at once if the parent is already gone."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):
        os._exit(143)


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
    full_env = dict(os.environ if env is None else env)
    full_env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    full_env[PARENT_ENV] = str(os.getpid())
    with open(log, "ab" if append else "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fedkube", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=new_session,
        )
