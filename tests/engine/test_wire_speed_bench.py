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
    assert len(rows) == 2, out.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 12 and cells[8].endswith("%"), cells
    # Where the time goes: fedkube's own work, measured apart, per GiB.
    work = [line for line in out.stdout.splitlines() if line.startswith("| 0.2 M |")][1]
    own = [c.strip() for c in work.strip("|").split("|")]
    assert len(own) == 8 and all(float(c) > 0 for c in own[3:7]), own


def test_the_long_link_bench_runs_short_through_its_proxy() -> None:
    bench = ROOT / "bench" / "long_link.py"
    args = ["--rtt-ms", "0", "20", "--params", "2e5", "--rounds", "1"]
    args += ["--upload-window", "4096", "64"]
    out = subprocess.run(
        [sys.executable, str(bench), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if " KiB | " in line]
    assert [r.split("|")[1:3] for r in rows] == [
        [" 4096 KiB ", " 0 ms "],
        [" 4096 KiB ", " 20 ms "],
        [" 64 KiB ", " 0 ms "],
        [" 64 KiB ", " 20 ms "],
    ], out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) > 0 and float(cells[4]) > 0, cells


def test_the_memory_bench_runs_short_for_each_model_size() -> None:
    bench = ROOT / "bench" / "large_model_memory.py"
    args = ["--skip-wire", "--sites", "2", "3", "--params", "2e5", "3e5", "--rounds", "2"]
    args += ["--upload-window", "64"]
    out = subprocess.run(
        [sys.executable, str(bench), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if " KiB | " in line]
    # Each size, each number of sites: the bench checked every round's sum.
    assert [[c.strip() for c in r.split("|")[1:4]] for r in rows] == [
        [size, "64 KiB", sites] for size in ("0.2 M", "0.3 M") for sites in ("2", "3")
    ], out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[7].endswith("x") and float(cells[6]) >= 0, cells
