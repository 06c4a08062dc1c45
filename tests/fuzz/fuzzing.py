"""Running a fuzz target for a while and reading what libFuzzer said: how many inputs it
tried, the coverage it reached, and whether it found a crash or a hang. Shared by the smoke
test and ``bench/fuzz.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# An input that takes longer than this is a hang.
HANG_SECONDS = 10


@dataclass(frozen=True)
class FuzzRun:
    target: str
    seconds: float
    inputs: int
    coverage: int
    crashes: int
    hangs: int
    log: str
    artifacts: list[Path]


def fuzz(target: str, seconds: int, work: Path) -> FuzzRun:
    """Fuzz ``target`` for ``seconds`` with its corpus and findings under ``work``."""
    corpus, found = work / "corpus" / target, work / "findings" / target
    found.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), FEDKUBE_TORCH_THREADS="1")
    out = subprocess.run(
        [
            sys.executable, "-m", "tests.fuzz.run_target", target, str(corpus),
            f"-max_total_time={seconds}", f"-timeout={HANG_SECONDS}", "-rss_limit_mb=3072",
            f"-artifact_prefix={found}/", "-print_final_stats=1",
        ],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=seconds + 300,
    )  # fmt: skip
    log = out.stdout + out.stderr
    runs = [int(n) for n in re.findall(r"^#(\d+)", log, re.M)]
    stats = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    covered = [int(c) for c in re.findall(r"cov: (\d+)", log)]
    artifacts = sorted(found.glob("*"))
    hangs = [a for a in artifacts if a.name.startswith("timeout-")]
    # libFuzzer also keeps the slowest inputs (slow-unit-*): no finding by themselves (one
    # kept in a run that shared the cores with CI took 0.7 ms when rerun alone).
    crashes = [a for a in artifacts if a.name.startswith(("crash-", "oom-", "leak-"))]
    if out.returncode != 0 and not crashes and not hangs:
        crashes = [Path(f"(exit status {out.returncode}, no artifact)")]
    return FuzzRun(
        target,
        seconds,
        int(stats[-1]) if stats else max(runs, default=0),
        max(covered, default=0),
        len(crashes),
        len(hangs),
        log,
        artifacts,
    )
