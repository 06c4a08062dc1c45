"""Shared test set-up: one torch thread per process on these small machines; every test
under tests/kube marked needs_tools."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FEDKUBE_TORCH_THREADS", "1")

# A shell script's background job starts with SIGINT ignored (tests/run-all.sh runs pytest as
# one), and every process a test starts would inherit that: `fedkube run` would not hear the
# Ctrl-C that a test sends it. Restored as a terminal would deliver it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_KUBE_TESTS = Path(__file__).resolve().parent / "kube"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tests/run-all.sh runs the tests that need no tools beside the builds, the rest after.
    for item in items:
        if item.path.is_relative_to(_KUBE_TESTS):
            item.add_marker(pytest.mark.needs_tools)
