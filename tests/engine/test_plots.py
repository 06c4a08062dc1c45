"""The plots a local run draws read true: progress.png's rounds are whole numbers, and
statistics.png draws a feature holding zeros (a bin of one value) without a 1e298 spike."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from fedkube.cli.progress_plot import progress_figure
from fedkube.cli.statistics_report import statistics_figure
from fedkube.spec.progress import JobResult
from fedkube.spec.statistics import StatisticsReport
from fedkube.testing import write_manifest

from tests.support.cli import fedkube_cli

ROOT = Path(__file__).resolve().parents[2]


def _breast_cancer(tmp_path: Path, rounds: int) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / "breast-cancer.yaml").read_text())
    doc["spec"]["rounds"] = rounds
    return write_manifest(tmp_path / "bc.yaml", doc)


def test_progress_shows_whole_rounds(tmp_path: Path) -> None:
    out = fedkube_cli(["run", str(_breast_cancer(tmp_path, 3)), "--output", "out"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "out" / "progress.png").stat().st_size > 10_000
    result = JobResult.model_validate(json.loads((tmp_path / "out" / "result.json").read_text()))
    figure = progress_figure(result)
    panels = [ax for ax in figure.axes if ax.get_xlabel() == "round"]
    assert len(panels) == 4
    for ax in panels:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)


def test_statistics_draw_features_holding_zeros_to_scale(tmp_path: Path) -> None:
    out = fedkube_cli(["stats", str(_breast_cancer(tmp_path, 1)), "--output", "s"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    report = StatisticsReport.model_validate(
        json.loads((tmp_path / "s" / "statistics.json").read_text())
    )
    with_zeros = [
        f.name for f in report.overall.features if any(b.low == b.high for b in f.histogram)
    ]
    assert len(with_zeros) >= 4, with_zeros  # breast cancer's concavity features, among others
    figure = statistics_figure(report)
    drawn = {ax.get_title(): ax for ax in figure.axes if ax.get_title()}
    assert len(drawn) == len(report.overall.features)
    for ax in drawn.values():
        high = ax.get_ylim()[1]
        assert math.isfinite(high) and high < 1e6, (ax.get_title(), high)
