"""`fedkube run`'s children as forks of itself: torch, the engine and the data libraries are
imported once, in the parent, and every child (the aggregator, each site) starts from that
memory, shared copy-on-write, instead of importing them again (a zygote, as Android's).

Forking is safe here because the parent runs no thread before it forks: it imports, and
runs a few torch operations on one thread (inline, no OpenMP pool) to pay their first-call
costs once. Each child then arms its die-with-parent signal, restores default
signal handling, sends its output to its log and runs one `fedkube` command in-process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def preload(datasets: Iterable[str] = ()) -> None:
    """Import what every child needs, once, load the scikit-learn ``datasets`` the sites
    split (from the local cache: ``fedkube.data.sklearn_datasets``), and pay torch's
    first-call costs (dispatch tables) on one thread: the children inherit all of it."""
    import pandas  # noqa: F401
    import torch

    import fedkube.aggregator.main
    import fedkube.cli.pod_roles  # what the children run (the parent runs cli.main already)
    import fedkube.trainer.site  # noqa: F401
    from fedkube.data.sklearn_datasets import load_dataset
    from fedkube.trainer.optimizers import Sgd
    from fedkube.trainer.scores import roc_auc

    for name in datasets:
        load_dataset(name)
    # One thread: torch runs these inline and starts no OpenMP pool, which a fork could not
    # carry (forked children of a process with a running pool can hang).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    loss = torch.nn.functional.cross_entropy(model(torch.zeros(2, 4)), torch.tensor([0, 1]))
    loss.backward()  # type: ignore[no-untyped-call]
    Sgd(model.parameters(), lr=0.1).step()
    torch.softmax(model(torch.zeros(2, 4)), dim=1)
    roc_auc(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.8]))


class ForkedChild:
    """A forked child as `fedkube run` watches it: the part of ``subprocess.Popen`` it uses."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        until = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if until is not None and time.monotonic() >= until:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_fedkube(args: list[str], log: Path, entry: Callable[[list[str]], int]) -> ForkedChild:
    """Run ``fedkube ARGS`` (``entry``: the command line's main) in a fork of this process,
    its output appended to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return ForkedChild(pid, args)
    code = 1
    try:
        _become_child(parent, log)
        code = entry(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _become_child(parent: int, log: Path) -> None:
    os.setsid()  # Ctrl-C reaches `fedkube run` alone, which stops the children in order
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(143)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
