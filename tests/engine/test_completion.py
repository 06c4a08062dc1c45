"""`fedkube completion bash`: sourced in a real bash, it completes commands, subcommands and
each command's own flags."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _complete(script: str, line: str) -> list[str]:
    words = line.split(" ")
    probe = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_fedkube; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.fixture(scope="module")
def script() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "fedkube", "completion", "bash"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_commands_subcommands_and_flags_complete(script: str) -> None:
    assert _complete(script, "fedkube va") == ["validate"]
    assert {"run", "stats", "fetch", "examples", "certs"} <= set(_complete(script, "fedkube "))
    assert _complete(script, "fedkube certs s") == ["sign"]
    assert _complete(script, "fedkube run job.yaml --js") == ["--json"]
    assert "--ca-dir" in _complete(script, "fedkube certs sign --")
    assert "--json" not in _complete(script, "fedkube certs sign --")  # that command's own
    assert _complete(script, "fedkube fetch bc --helper") == ["--helper-port"]
