"""The tools the Kubernetes tests need (Go-built binaries, KWOK, fedkube's images), as the
scripts in tests/tools build or find them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def build_output(script: str, what: str) -> list[str]:
    """The lines a build script (tests/tools/<script>) printed: what it built or found.

    tests/run-all.sh runs the tests that need no tools beside the builds; a test among them
    that asked for a tool would wait on the builds' lock (and could time out), so it is
    refused with what to do."""
    if os.environ.get("FEDKUBE_TESTS_WITHOUT_TOOLS"):
        raise RuntimeError(
            f"this test needs {what}, but it runs among the tests that need no tools "
            "(tests/run-all.sh builds the tools beside them): mark it pytest.mark.needs_tools"
        )
    out = subprocess.run(["bash", str(TOOLS / script)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"building {what} failed:\n{out.stderr[-6000:]}")
    return out.stdout.strip().splitlines()
