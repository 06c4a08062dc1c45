"""The Grafana dashboard for federated jobs, as code (grafana-foundation-sdk).

    python -m fedkube_operator.dashboard   # rewrites helm/fedkube/files/fedkube-dashboard.json

The chart ships the generated JSON as a ConfigMap that Grafana's sidecar picks up; a test
fails when the checked-in file drifts from this module, and another runs every query against
a real Prometheus scraping a real job. Series come from the aggregators and from the
operator, both labelled ``fedjob_namespace`` and ``fedjob`` (Prometheus's own ``namespace`` is
the scraped pod's); panels that either source serves take the larger of the two. A
``cluster`` label, where the Prometheus adds one (federation, Thanos), picks the cluster.
"""

from __future__ import annotations

from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

OUT = Path(__file__).resolve().parents[2] / "helm" / "fedkube" / "files" / "fedkube-dashboard.json"
UID = "fedkube-jobs"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'cluster=~"$cluster", fedjob_namespace=~"$namespace", fedjob=~"$fedjob"'
WIDTH = 24

Target = tuple[str, str]  # (PromQL, legend)


def _query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    )


def _targets(
    panel: timeseries.Panel | stat.Panel | statetimeline.Panel, targets: list[Target]
) -> None:
    for i, (expr, legend) in enumerate(targets):
        panel.with_target(_query(expr, legend, chr(ord("A") + i)))


def _series(title: str, unit: str, targets: list[Target], description: str) -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).unit(unit).description(description).datasource(DATASOURCE)
    )
    _targets(panel, targets)
    return panel


def _stat(title: str, targets: list[Target], description: str) -> stat.Panel:
    panel = stat.Panel().title(title).description(description).datasource(DATASOURCE)
    _targets(panel, targets)
    return panel


def _timeline(title: str, targets: list[Target], description: str) -> statetimeline.Panel:
    panel = statetimeline.Panel().title(title).description(description).datasource(DATASOURCE)
    _targets(panel, targets)
    return panel


BY_JOB = "max by (fedjob_namespace, fedjob)"
# A job's name in a legend: two jobs of one name in two namespaces stay apart.
NAME = "{{fedjob_namespace}}/{{fedjob}}"
BY_SITE = "max by (fedjob_namespace, fedjob, site)"
SUM_JOB = "sum by (fedjob_namespace, fedjob)"
CLUSTER = 'cluster=~"$cluster"'
# (width, height, panel), laid out left to right, top to bottom.
PANELS: list[tuple[int, int, timeseries.Panel | stat.Panel | statetimeline.Panel]] = [
    (
        6,
        5,
        _stat(
            "Rounds done / asked",
            [
                (f"{BY_JOB} (fedkube_rounds_completed{{{JOB}}})", f"{NAME} done"),
                (f"{BY_JOB} (fedkube_rounds_planned{{{JOB}}})", f"{NAME} asked"),
            ],
            "Rounds completed and rounds the job asks for.",
        ),
    ),
    (
        6,
        5,
        _stat(
            "Sites connected",
            [(f"sum by (fedjob_namespace, fedjob) (fedkube_site_connected{{{JOB}}})", NAME)],
            "Sites holding their stream open to the aggregator.",
        ),
    ),
    (
        6,
        5,
        _stat(
            "Aggregator restarts",
            [(f"{BY_JOB} (fedkube_aggregator_restarts_total{{{JOB}}})", NAME)],
            "Times an aggregator resumed the job from its checkpoint.",
        ),
    ),
    (
        6,
        5,
        _stat(
            "Jobs by phase (operator)",
            [('sum by (phase) (fedkube_jobs{cluster=~"$cluster"})', "{{phase}}")],
            "FederatedJobs the operator watches, by phase.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Global accuracy",
            "percentunit",
            [(f"{BY_JOB} (fedkube_global_accuracy{{{JOB}}})", NAME)],
            "The latest final evaluation of the global model on the sites' held-out data.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Global loss",
            "none",
            [(f"{BY_JOB} (fedkube_global_loss{{{JOB}}})", NAME)],
            "The same evaluation's loss, in the task's own units (cross-entropy, squared error).",
        ),
    ),
    (
        12,
        8,
        _series(
            "Accuracy by site (jobs without DP or secure aggregation)",
            "percentunit",
            [
                (
                    f"{BY_SITE} (fedkube_site_eval_accuracy{{{JOB}}})",
                    f"{NAME} {{{{site}}}}",
                )
            ],
            "The global model's held-out accuracy at each site; a private job publishes none.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Round duration",
            "s",
            [
                (
                    "histogram_quantile(0.5, sum by (fedjob_namespace, fedjob, le) (rate("
                    f"fedkube_round_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    f"{NAME} median",
                ),
                (
                    f"{SUM_JOB} (rate(fedkube_round_duration_seconds_sum{{{JOB}}}"
                    f"[$__rate_interval])) / {SUM_JOB} (rate("
                    f"fedkube_round_duration_seconds_count{{{JOB}}}[$__rate_interval]))",
                    f"{NAME} mean",
                ),
            ],
            "Wall time from a round's opening to its close.",
        ),
    ),
    (
        24,
        8,
        _timeline(
            "Sites in each round",
            [
                (
                    f"{BY_SITE} (fedkube_site_in_last_round{{{JOB}}})",
                    f"{NAME} {{{{site}}}}",
                )
            ],
            "1 while the site's update made the last closed round: gaps are rounds it missed.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Spread of site accuracy",
            "percentunit",
            [(f"{BY_JOB} (fedkube_global_accuracy_spread{{{JOB}}})", NAME)],
            "Best site's accuracy minus the worst's: how unevenly the model serves the sites.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Rounds missed in a row, by site",
            "short",
            [
                (
                    f"{BY_SITE} (fedkube_site_rounds_missed{{{JOB}}})",
                    f"{NAME} {{{{site}}}}",
                )
            ],
            "Closed rounds in a row without the site's update.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Tensor bytes per second",
            "Bps",
            [
                (
                    "sum by (fedjob_namespace, fedjob, direction) (rate("
                    f"fedkube_transfer_bytes_total{{{JOB}}}[$__rate_interval]))",
                    f"{NAME} {{{{direction}}}}",
                )
            ],
            "Model bytes sent to the sites and update bytes received from them.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Refusals",
            "short",
            [
                (
                    "sum by (fedjob_namespace, fedjob, reason) (increase("
                    f"fedkube_refusals_total{{{JOB}}}[$__rate_interval]))",
                    f"{NAME} {{{{reason}}}}",
                )
            ],
            "Messages the aggregator refused, by reason.",
        ),
    ),
    (
        12,
        8,
        _series(
            "Privacy spent against the cap",
            "short",
            [
                (
                    f"{BY_JOB} (fedkube_privacy_epsilon{{{JOB}}}) or "
                    f"{BY_JOB} (fedkube_site_privacy_epsilon{{{JOB}}})",
                    f"{NAME} epsilon",
                ),
                (f"{BY_JOB} (fedkube_privacy_epsilon_cap{{{JOB}}})", f"{NAME} cap"),
            ],
            "Epsilon spent: update-level DP's, else the highest a site reports (record-level).",
        ),
    ),
    (
        12,
        8,
        _series(
            "Site lateness",
            "s",
            [
                (
                    f"{BY_SITE} (fedkube_site_lateness_seconds{{{JOB}}})",
                    f"{NAME} {{{{site}}}}",
                )
            ],
            "How long after a round's first update each site's update arrived.",
        ),
    ),
    (
        24,
        6,
        _series(
            "Operator reconcile errors",
            "short",
            [
                (
                    f"sum by (namespace) (increase(fedkube_reconcile_errors_total{{{CLUSTER}}}"
                    "[$__rate_interval]))",
                    "{{namespace}} operator",
                )
            ],
            "Reconciles of the operator that raised.",
        ),
    ),
    (
        24,
        5,
        _series(
            "Releases in use",
            "short",
            [
                (
                    f"count by (version, protocol, component) (fedkube_build_info{{{CLUSTER}}})",
                    "{{component}} {{version}} (protocol {{protocol}})",
                )
            ],
            "Processes by fedkube release and protocol: a member on another release shows here "
            "before its trainers are refused.",
        ),
    ),
]


def build() -> dashboard.Dashboard:
    d = (
        dashboard.Dashboard("fedkube: federated jobs")
        .uid(UID)
        .tags(["fedkube", "federated-learning"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(_label_variable("cluster", "Cluster", "fedkube_build_info"))
        .with_variable(
            _label_variable(
                "namespace",
                "Namespace",
                'fedkube_rounds_planned{cluster=~"$cluster"}',
                "fedjob_namespace",
            )
        )
        .with_variable(
            _label_variable(
                "fedjob",
                "Job",
                'fedkube_rounds_planned{cluster=~"$cluster", fedjob_namespace=~"$namespace"}',
                "fedjob",
            )
        )
    )
    x = y = row_height = 0
    for width, height, panel in PANELS:
        if x + width > WIDTH:
            x, y, row_height = 0, y + row_height, 0
        d.with_panel(panel.grid_pos(GridPos(h=height, w=width, x=x, y=y)))
        x, row_height = x + width, max(row_height, height)
    return d


def _label_variable(
    name: str, label: str, series: str, key: str | None = None
) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({series}, {key or name})")
        .include_all(True)
        .all_value(".*")
        .multi(True)
    )


def dashboard_json() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def expressions(doc: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of a dashboard JSON document."""
    out = []
    for panel in doc["panels"]:  # type: ignore[attr-defined]
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


if __name__ == "__main__":
    OUT.write_text(dashboard_json())
    print(f"wrote {OUT}")
