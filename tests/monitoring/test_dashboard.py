"""The Grafana dashboard is generated from code and shipped by the chart."""

from __future__ import annotations

import json

from fedkube_operator.dashboard import OUT, dashboard_json, expressions

from tests.monitoring.chart import rendered


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
    assert variables == ["datasource", "namespace", "fedjob"]


def test_monitoring_objects_are_off_unless_asked_for() -> None:
    kinds = {d["kind"] for d in rendered("monitoring.prometheusRule.enabled=false")}
    assert not kinds & {"PodMonitor", "PrometheusRule"}
    docs = rendered("monitoring.podMonitor.enabled=true")
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    ports = [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]]
    assert ports == ["metrics", "http"]
