"""The chart's alert rules, checked and unit-tested by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.monitoring.chart import promtool, write_rules

HERE = Path(__file__).resolve().parent


def test_the_alert_rules_are_valid_prometheus_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    out = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


def test_each_alert_fires_when_and_only_when_it_should(tmp_path: Path) -> None:
    write_rules(tmp_path)
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)
    out = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
