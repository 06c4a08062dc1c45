"""`bench/wire_speed.py` at a small size: the bare stream and fedkube's rounds both run, move
every byte they should (the bench checks each round of each), and the table comes out. The
figures themselves are the bench's to show, not a test's to assert."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wire_bench_runs_short_and_checks_its_rounds() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "wire_speed.py"), "--params", "2e5", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 0.2 M |")]
    assert len(rows) == 1, out.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 10 and cells[6].endswith("%"), cells
