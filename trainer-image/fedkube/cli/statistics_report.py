"""`fedkube stats` on the terminal and in a picture: the pooled figures per feature, each
site's means beside them (plain jobs), the label counts, and statistics.png with every
site's distribution of every feature."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from fedkube.spec.statistics import FeatureStatistics, StatisticsBlock, StatisticsReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_FILE = "statistics.png"


def _num(v: float | None, width: int = 10) -> str:
    if v is None:
        return "-".rjust(width)
    return f"{v:{width}.4g}"


def _name(text: str, width: int = 26) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def feature_table(block: StatisticsBlock) -> list[str]:
    head = (
        f"{'feature':<26} {'count':>6} {'missing':>7} {'mean':>10} {'std':>10} {'min':>10} "
        f"{'p25':>10} {'median':>10} {'p75':>10} {'max':>10}"
    )
    lines = [head]
    for f in block.features:
        q = f.quantiles
        lines.append(
            f"{_name(f.name):<26} {f.count:>6} {f.missing:>7} {_num(f.mean)} {_num(f.std)} "
            f"{_num(f.min)} {_num(q.get('0.25'))} {_num(q.get('0.5'))} {_num(q.get('0.75'))} "
            f"{_num(f.max)}"
        )
    return lines


def label_lines(report: StatisticsReport) -> list[str]:
    def counts(block: StatisticsBlock) -> str:
        return "  ".join(
            f"{c.label}={c.count if c.count is not None else 'withheld'}" for c in block.labels
        )

    lines = [f"{'all sites':<26} rows {report.overall.rows:>6}  {counts(report.overall)}"]
    for site, block in report.per_site.items():
        lines.append(f"{_name(site):<26} rows {block.rows:>6}  {counts(block)}")
    return lines


def site_means(report: StatisticsReport) -> list[str]:
    """Each feature's mean at each site: where the sites' data differ."""
    sites = list(report.per_site)
    if not sites:
        return []
    lines = [f"{'feature (mean per site)':<26} " + " ".join(f"{_name(s, 12):>12}" for s in sites)]
    for j, f in enumerate(report.overall.features):
        row = [report.per_site[s].features[j].mean for s in sites]
        lines.append(f"{_name(f.name):<26} " + " ".join(_num(v, 12) for v in row))
    return lines


def statistics_lines(report: StatisticsReport, path: Path | None = None) -> list[str]:
    lines = [
        f"federated statistics of job {report.job}: {len(report.sites)} sites, "
        f"{report.overall.rows} rows"
        + (", summed under secure aggregation" if report.secure else ""),
        "",
        *feature_table(report.overall),
        "",
        *label_lines(report),
    ]
    means = site_means(report)
    if means:
        lines += ["", *means]
    for site, why in report.withheld.items():
        lines.append(f"site {site}: no figures of its own ({why})")
    lines.append(
        f"quantiles, min and max within {report.relative_accuracy:.0%} (bin edges); bins and "
        f"label counts under {report.min_bin_count} rows merged or withheld"
    )
    if path is not None:
        lines.append(f"statistics: {path}")
    return lines


def _density(f: FeatureStatistics) -> tuple[list[float], list[float]]:
    """Each bin as a step of its share of the rows over its width. A bin of one value (the
    zeros of a feature) has no width: it is drawn as a fiftieth of the feature's span wide,
    not as a spike of 1e298."""
    if not f.histogram:
        return [], []
    span = max(b.high for b in f.histogram) - min(b.low for b in f.histogram)
    point = span / 50 if span > 0 else 1.0
    xs, ys = [], []
    for b in f.histogram:
        low, high = (b.low, b.high) if b.high > b.low else (b.low - point / 2, b.low + point / 2)
        height = b.count / max(f.count, 1) / (high - low)
        xs += [low, high]
        ys += [height, height]
    return xs, ys


def plot_statistics(report: StatisticsReport, folder: Path, most: int = 36) -> Path:
    import matplotlib.pyplot as plt

    fig = statistics_figure(report, most)
    path = folder / PLOT_FILE
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def statistics_figure(report: StatisticsReport, most: int = 36) -> Figure:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    features = report.overall.features[:most]
    cols = min(6, len(features))
    rows = math.ceil(len(features) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    groups = report.per_site or {"all sites": report.overall}
    for j, f in enumerate(features):
        ax = axes[j // cols][j % cols]
        for name, block in groups.items():
            xs, ys = _density(block.features[j])
            ax.plot(xs, ys, label=name, linewidth=1)
        ax.set_title(_name(f.name, 30), fontsize=8)
        ax.tick_params(labelsize=6)
    for j in range(len(features), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{report.job}: each feature's distribution per site (density)")
    fig.tight_layout()
    return fig
