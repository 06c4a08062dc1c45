"""`bench/gpu_imaging.py`, the GPU path prepared for a lent machine, run here in its CPU smoke
form: the imaging model by import path, Parquet images, two workers a site, a round closed
with an accuracy. (On a GPU machine the same script runs with task.device cuda and
mixedPrecision.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_runs_its_cpu_smoke() -> None:
    args = ["--device", "cpu", "--width", "4", "--rows", "48", "--rounds", "1", "--batch", "16"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_imaging.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| 1 |" in out.stdout, out.stdout
    assert "site-0's trainer ran 2 workers: True" in out.stdout, out.stdout
