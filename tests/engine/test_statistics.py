"""Federated statistics, piece by piece: the agreed bins, the exact sums through a 32-bit
ring, the privacy guards, and `fedkube stats` against the pooled data, plain and under
secure aggregation, with real processes."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from fedkube.spec.statistics import StatisticsReport
from fedkube.stats.exact import SQUARE_LIMBS, SUM_LIMBS, fixed_point, from_limbs, to_limbs
from fedkube.stats.layout import StatsLayout, add
from fedkube.stats.sketch import LogBins
from fedkube.stats.summary import merged_bins
from sklearn.datasets import load_breast_cancer

from tests.support.cli import fedkube_cli

ROOT = Path(__file__).resolve().parents[2]


def test_quantiles_fall_in_the_bin_of_the_true_quantile_or_the_next() -> None:
    rng = np.random.default_rng(0)
    bins = LogBins(0.01)
    for values in (
        rng.normal(0, 1, 5000),
        rng.lognormal(3, 2, 5000),
        -rng.exponential(1e-4, 5000),
        np.concatenate([np.zeros(100), rng.uniform(-1e6, 1e6, 1000)]),
    ):
        counts = np.bincount(bins.slots(values), minlength=bins.size)
        for q in (0.05, 0.25, 0.5, 0.75, 0.95):
            estimate = bins.quantile(counts, q)
            assert estimate is not None
            truth = np.quantile(values, q)
            got, want = bins.slots(np.array([estimate, truth]))
            assert abs(int(got) - int(want)) <= 1, (q, estimate, truth)
            # Within the bins' relative accuracy of the true quantile, or one bin beyond.
            assert abs(estimate - truth) <= 0.03 * abs(truth) + 1e-9


def test_bins_ascend_with_values_and_their_edges_hold_them() -> None:
    bins = LogBins(0.02)
    values = np.array([-5e3, -1.0, -1e-7, 0.0, 1e-12, 1e-7, 0.5, 1.0, 7.0, 1e9])
    slots = bins.slots(values)
    assert list(slots) == sorted(slots)
    for v, s in zip(values, slots, strict=True):
        low, high = bins.edges(int(s))
        if abs(v) >= 1e-9:
            assert low <= v <= high, (v, low, high)
        rep = bins.value(int(s))
        assert abs(rep - v) <= 0.02 * abs(v) + 1e-9


def test_the_reports_fast_paths_give_the_scalar_definitions_figures() -> None:
    """A report asks five quantiles and a histogram of every feature of every site (thousands
    of features for images): it reads them in one pass and from a table of edges, and must
    give the same floats as one quantile and one edge at a time."""
    rng = np.random.default_rng(3)
    bins = LogBins(0.01)
    table_low, table_high = bins.edge_table
    for slot in range(bins.size):
        assert (table_low[slot], table_high[slot]) == bins.edges(slot)
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    for values in (rng.normal(0, 1, 700), rng.lognormal(3, 2, 50), np.zeros(3)):
        counts = np.bincount(bins.slots(values), minlength=bins.size)
        assert bins.quantiles(counts, qs) == [bins.quantile(counts, q) for q in qs]
        for least in (1, 5, 40):
            merged = merged_bins(counts, bins, least)
            assert sum(b.count for b in merged) == (len(values) if merged else 0)
            assert all(bins.edges(int(s)) for s in np.flatnonzero(counts))
            assert [b.low for b in merged] == sorted(b.low for b in merged)
    assert bins.quantiles(np.zeros(bins.size, dtype=np.int64), qs) == [None] * 5


def test_limbs_sum_exactly_through_the_ring_even_when_it_wraps() -> None:
    rng = np.random.default_rng(1)
    sites = [rng.normal(0, 1e6, 50) for _ in range(300)]
    sums = [sum(fixed_point(v)) for v in sites]
    squares = [sum(q * q for q in fixed_point(v)) for v in sites]
    total_sum = np.zeros((1, SUM_LIMBS), dtype=np.uint32)
    total_sq = np.zeros((1, SQUARE_LIMBS), dtype=np.uint32)
    for s, sq in zip(sums, squares, strict=True):
        # Masks are uniform in the ring: add one and take it off again, as unmasking does.
        mask = rng.integers(0, 2**32, size=(1, SUM_LIMBS), dtype=np.uint32)
        total_sum += to_limbs([s], SUM_LIMBS) + mask
        total_sum -= mask
        total_sq += to_limbs([sq], SQUARE_LIMBS)
    assert from_limbs(total_sum, signed=True) == [sum(sums)]
    assert from_limbs(total_sq, signed=False) == [sum(squares)]


def test_layout_totals_match_the_pooled_rows() -> None:
    rng = np.random.default_rng(2)
    layout = StatsLayout(3, 2, LogBins(0.01))
    parts = []
    for n in (40, 7, 90):
        x = rng.normal([5.0, -2e3, 1e-3], [1.0, 500.0, 1e-4], size=(n, 3))
        x[rng.random((n, 3)) < 0.1] = np.nan
        parts.append((x, rng.integers(-1, 2, n)))
    summed = None
    for x, labels in parts:
        tensors = layout.encode(x, labels)
        summed = tensors if summed is None else add(summed, tensors)
    assert summed is not None
    totals = layout.decode(summed)
    pooled = np.concatenate([x for x, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    assert totals.rows == len(pooled)
    assert list(totals.labels) == [int((labels == 0).sum()), int((labels == 1).sum())]
    for j in range(3):
        col = pooled[~np.isnan(pooled[:, j]), j]
        assert totals.present[j] == len(col)
        exact_mean = Fraction(math.fsum(col)) / len(col)
        assert totals.mean(j) == pytest.approx(float(exact_mean), rel=1e-12)
        assert totals.std(j) == pytest.approx(float(np.std(col)), rel=1e-9)


def test_small_bins_merge_so_no_edge_is_one_record() -> None:
    bins = LogBins(0.01)
    values = np.array([1.0] * 10 + [50.0, 51.0, 52.0] + [100.0] * 6 + [9e4])
    counts = np.bincount(bins.slots(values), minlength=bins.size)
    merged = merged_bins(counts, bins, least=5)
    assert sum(b.count for b in merged) == len(values)
    assert all(b.count >= 5 for b in merged)
    # The lone outlier joins a bin that starts far below it: the max is no patient's value.
    assert merged[-1].low < 100.0 and merged[-1].high >= 9e4


def pooled_breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x, y


def check_against_pooled(report: StatisticsReport) -> None:
    x, y = pooled_breast_cancer()
    bins = LogBins(report.relative_accuracy)
    assert report.overall.rows == len(x)
    assert [(c.label, c.count) for c in report.overall.labels] == [
        ("0", int((y == 0).sum())),
        ("1", int((y == 1).sum())),
    ]
    for j, f in enumerate(report.overall.features):
        col = x[:, j]
        assert (f.count, f.missing) == (len(col), 0)
        assert f.mean == pytest.approx(float(Fraction(math.fsum(col)) / len(col)), rel=1e-12)
        assert f.std == pytest.approx(float(np.std(col)), rel=1e-9)
        for q, estimate in f.quantiles.items():
            got, want = bins.slots(np.array([estimate, np.quantile(col, float(q))]))
            assert abs(int(got) - int(want)) <= 1, (f.name, q)
        assert f.min is not None and f.max is not None
        assert f.min <= col.min() and f.max >= col.max()


@pytest.mark.parametrize("example", ["breast-cancer.yaml", "breast-cancer-secure.yaml"])
def test_fedkube_stats_matches_the_pooled_data(tmp_path: Path, example: str) -> None:
    out = fedkube_cli(
        ["stats", str(ROOT / "examples" / example), "--output", str(tmp_path / "stats")],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mean radius" in out.stdout and "statistics.png" in out.stdout
    report = StatisticsReport.model_validate_json(
        (tmp_path / "stats" / "statistics.json").read_text()
    )
    check_against_pooled(report)
    assert (tmp_path / "stats" / "statistics.png").stat().st_size > 10_000
    secure = example.endswith("secure.yaml")
    assert report.secure == secure
    if secure:
        # The aggregator saw only totals: no site has figures of its own.
        assert report.per_site == {} and len(report.withheld) == 5
    else:
        # Plain: each site's own figures too, adding up to the totals.
        assert len(report.per_site) == 5 and report.withheld == {}
        assert sum(b.rows for b in report.per_site.values()) == report.overall.rows
        for j, f in enumerate(report.overall.features):
            counts = [b.features[j].count for b in report.per_site.values()]
            assert sum(counts) == f.count
        result = json.loads((tmp_path / "stats" / "result.json").read_text())
        assert result["modelPath"] == "" and result["roundsCompleted"] == 0
