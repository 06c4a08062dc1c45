"""What every part that starts fedkube's own processes on this machine shares: a free port,
and a child that dies with its parent. Below every layer, so that `fedkube run`'s launcher
and a site's trainer (starting its workers) both use it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket

# Set for a child that must not outlive its parent; the child arms it itself at start
# (die_with_parent_if_asked), since running Python between fork and exec (preexec_fn) can
# deadlock a parent that has other threads, such as gRPC's.
PARENT_ENV = "FEDKUBE_PARENT_PID"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child that is to die with this process (it calls
    ``die_with_parent_if_asked``)."""
    return {**env, PARENT_ENV: str(os.getpid())}


def die_with_parent_if_asked() -> None:
    """In a child started with ``child_env``: get SIGTERM when the parent dies, so no child
    outlives its run; exit at once if the parent is already gone."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):
        os._exit(143)
