"""`fedkube examples DIR` writes out the examples the package ships: the same bytes as the
source tree's examples/, never over a file already there unless asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples"


def _examples(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedkube", "examples", *args], capture_output=True, text=True
    )


def test_the_examples_written_are_the_source_trees(tmp_path: Path) -> None:
    out = _examples(str(tmp_path / "ex"))
    assert out.returncode == 0, out.stderr
    written = {p.relative_to(tmp_path / "ex") for p in (tmp_path / "ex").rglob("*") if p.is_file()}
    source = {
        p.relative_to(SOURCE)
        for p in SOURCE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert written == source and Path("breast-cancer.yaml") in written
    for relative in written:
        assert (tmp_path / "ex" / relative).read_bytes() == (SOURCE / relative).read_bytes()
    assert "fedkube run" in out.stderr and "kubectl apply" in out.stderr


def test_a_file_already_there_is_not_overwritten_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "ex"
    (target / "two-hospitals").mkdir(parents=True)
    mine = target / "two-hospitals" / "hospital-a.yaml"
    mine.write_text("# my own edits\n")
    refused = _examples(str(target))
    assert refused.returncode == 2
    assert f"{mine} exists" in refused.stderr and "--force" in refused.stderr
    # Nothing else was written either.
    assert sorted(p.name for p in target.rglob("*")) == ["hospital-a.yaml", "two-hospitals"]
    forced = _examples(str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert mine.read_bytes() == (SOURCE / "two-hospitals" / "hospital-a.yaml").read_bytes()
