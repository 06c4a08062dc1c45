"""The Grafana dashboard is generated from code and shipped by the chart."""

from __future__ import annotations

import json
import re

import pytest
from fedkube_operator.dashboard import OUT, dashboard_json, expressions

from tests.monitoring.chart import rendered

pytestmark = pytest.mark.needs_tools  # helm renders the chart


def test_the_checked_in_dashboard_is_current() -> None:
    assert OUT.read_text() == dashboard_json(), (
        "the dashboard code changed: run `python -m fedkube_operator.dashboard` and commit "
        f"{OUT.name}"
    )


def test_the_chart_ships_the_dashboard_for_grafanas_sidecar() -> None:
    docs = rendered("monitoring.dashboard.enabled=true")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"])
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(cm["data"]["fedkube-dashboard.json"])
    assert shipped == json.loads(OUT.read_text())
    titles = {t for t, _ in expressions(shipped)}
    for wanted in ("Rounds done / asked", "Sites in each round", "Privacy spent against the cap"):
        assert wanted in titles
    variables = [v["name"] for v in shipped["templating"]["list"]]
    assert variables == ["datasource", "cluster", "namespace", "fedjob"]


def test_each_figure_reads_in_its_own_unit_and_jobs_stay_apart_by_namespace() -> None:
    shipped = json.loads(OUT.read_text())
    units = {
        p["title"]: p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        for p in shipped["panels"]
    }
    # A loss of 0.12 is not "12%".
    assert units["Global accuracy"] == "percentunit"
    assert units["Global loss"] == "none"
    assert units["Accuracy by site (jobs without DP or secure aggregation)"] == "percentunit"
    for title, expr in expressions(shipped):
        if "fedjob=~" in expr:
            # Both sources label a job's namespace alike; a by-clause that drops it would
            # merge two jobs of one name in two namespaces.
            assert 'fedjob_namespace=~"$namespace"' in expr, title
            for clause in re.findall(r"by \(([^)]*)\)", expr):
                assert "fedjob_namespace" in clause, (title, expr)
    assert any("fedkube_build_info" in e for _, e in expressions(shipped))


def test_monitoring_objects_are_off_unless_asked_for() -> None:
    kinds = {d["kind"] for d in rendered("monitoring.prometheusRule.enabled=false")}
    assert not kinds & {"PodMonitor", "PrometheusRule"}
    docs = rendered("monitoring.podMonitor.enabled=true")
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    ports = [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]]
    assert ports == ["metrics", "http"]
