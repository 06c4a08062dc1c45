"""Shared test set-up: one torch thread per process on these small machines; every test
under tests/kube marked needs_tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FEDKUBE_TORCH_THREADS", "1")

_KUBE_TESTS = Path(__file__).resolve().parent / "kube"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tests/run-all.sh runs the tests that need no tools beside the builds, the rest after.
    for item in items:
        if item.path.is_relative_to(_KUBE_TESTS):
            item.add_marker(pytest.mark.needs_tools)
