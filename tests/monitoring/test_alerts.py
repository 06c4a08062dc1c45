"""The chart's alert rules, checked and unit-tested by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.monitoring.chart import promtool, write_rules

pytestmark = pytest.mark.needs_tools  # helm renders the chart

HERE = Path(__file__).resolve().parent


def test_the_alert_rules_are_valid_prometheus_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    out = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


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


def test_every_alert_links_a_runbook_section_that_exists(tmp_path: Path) -> None:
    import yaml

    rules = yaml.safe_load(write_rules(tmp_path).read_text())["groups"][0]["rules"]
    runbooks = (HERE.parents[1] / "docs" / "runbooks.md").read_text()
    anchors = {line[3:].strip().lower() for line in runbooks.splitlines() if line.startswith("## ")}
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://github.com/fedkube/fedkube/blob/main/docs/runbooks.md#")
        assert url.rpartition("#")[2] == rule["alert"].lower() in anchors, rule["alert"]
    mirror = write_rules(tmp_path, "monitoring.alerts.runbookBaseUrl=https://wiki.ward/fl/")
    urls = [
        r["annotations"]["runbook_url"]
        for r in yaml.safe_load(mirror.read_text())["groups"][0]["rules"]
    ]
    assert urls[0] == "https://wiki.ward/fl#fedkubejobfailed"
