"""Evaluation in a private job: no site's own held-out figures reach the aggregator. Under
secure aggregation the sites' counts are summed under the masks; under differential privacy
alone they leave a site only noised (evaluation.noiseMultiplier), or not at all."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from fedkube.simulation import simulate
from fedkube.spec import parse_job
from fedkube.stats.score_counts import (
    LOSS_CAP,
    ScoreLayout,
    count_block,
    from_masked,
    noised,
    scores,
    to_masked,
)
from fedkube.testing import manifest
from fedkube.trainer.scores import roc_auc

from tests.support.privacy import library_epsilon


def _site(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, ...]:
    labels = rng.integers(0, 2, n)
    margins = rng.normal(labels * 2.0 - 1.0 + shift, 1.5)
    losses = np.log1p(np.exp(-np.where(labels == 1, margins, -margins)))
    return labels, losses, (margins > 0) == (labels == 1), margins


def test_summed_counts_give_the_pooled_figures() -> None:
    """Two sites' counts, masked as limbs and added: the pooled accuracy exactly, the pooled
    loss to 2^-16, and the pooled AUC within a bin's width of the exact one."""
    rng = np.random.default_rng(7)
    sites = [_site(rng, 700, 0.0), _site(rng, 300, 0.4)]
    summed = sum(to_masked(count_block(*s)).astype(np.int64) for s in sites)
    rows, figures = scores(from_masked(np.asarray(summed) % 2**32))
    labels, losses, correct, margins = (np.concatenate(parts) for parts in zip(*sites, strict=True))
    assert rows == 1000
    assert figures["accuracy"] == correct.mean()
    assert figures["loss"] == pytest.approx(losses.mean(), abs=2**-16)
    assert figures["auc"] == pytest.approx(roc_auc(labels, margins), abs=2e-3)


def test_a_record_moves_the_counts_by_the_sensitivity_the_noise_assumes() -> None:
    rng = np.random.default_rng(1)
    labels, losses, correct, margins = _site(rng, 50, 0.0)
    losses[0] = 1e9  # a record whose loss is huge counts as LOSS_CAP
    with_it = count_block(labels, losses, correct, margins)
    without = count_block(labels[1:], losses[1:], correct[1:], margins[1:])
    moved = (with_it - without).astype(np.float64)
    moved[2] /= LOSS_CAP * 2**16  # the loss in units of its bound
    assert np.count_nonzero(moved) <= 4 and np.abs(moved).max() <= 1.0
    assert np.sqrt((moved**2).sum()) <= 2.0


def test_noised_counts_differ_every_time_and_spread_as_calibrated() -> None:
    counts = ScoreLayout(personal=False).empty()
    draws = np.stack([noised(counts, 1.5) for _ in range(400)])
    assert len({d.tobytes() for d in draws}) == 400, "no seed reproduces the noise"
    rows = draws[:, 0].astype(np.float64)
    assert rows.std() == pytest.approx(1.5 * 2.0, rel=0.15)  # sigma = z * sensitivity 2
    loss = draws[:, 2].astype(np.float64) / (LOSS_CAP * 2**16)
    assert loss.std() == pytest.approx(3.0, rel=0.15)


def test_secure_aggregation_scores_from_summed_counts_as_the_plain_run_scores() -> None:
    """The same job with and without secure aggregation: every evaluated round (the final
    evaluation included, a secure round of counts) has the plain run's accuracy and loss,
    from totals only: no site's own figure, no spread between sites."""
    plain = manifest("secure-eval", sites=4, rounds=3, min_sites=4)
    secure = copy.deepcopy(plain)
    secure["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    clear, masked = simulate(parse_job(plain)), simulate(parse_job(secure))
    assert [h.round for h in masked.history] == [1, 2, 3]
    for a, b in zip(clear.history, masked.history, strict=True):
        assert b.from_counts and not a.from_counts
        assert b.eval_sites == 4 and b.eval_samples == a.eval_samples
        assert b.accuracy == pytest.approx(a.accuracy, abs=1e-6)
        assert b.loss == pytest.approx(a.loss, abs=1e-4)
        assert b.auc is not None and abs(b.auc - a.auc) < 0.02  # pooled, not site-weighted
        assert b.accuracy_spread is None and a.accuracy_spread is not None
    for site in masked.sites.values():
        assert site.get("accuracy") is None and site.get("loss") is None


def _dp_sgd_job(name: str, evaluation: dict | None = None) -> dict:
    doc = manifest(name, sites=3, rounds=4, dataset="digits", model={"name": "mlp"})
    doc["spec"]["task"].update(learningRate=0.2)
    doc["spec"]["privacy"] = {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}
    if evaluation is not None:
        doc["spec"]["evaluation"] = evaluation
    return doc


def test_differential_privacy_alone_withholds_every_sites_scores() -> None:
    result = simulate(parse_job(_dp_sgd_job("dp-withheld")))
    assert all(h.accuracy is None and h.loss is None for h in result.history)
    for site in result.sites.values():
        assert set(site) == {"epsilon"} and site["epsilon"] > 0


def test_noised_counts_score_the_model_and_their_epsilon_is_accounted() -> None:
    """evaluation.noiseMultiplier: every round's global figures come from noised counts, and
    the held-out epsilon is the library's figure for that many Gaussian mechanisms at q=1
    (4 rounds evaluate versions 0-3, the initial one among them, and the final evaluation
    scores version 4: 5 in all)."""
    doc = _dp_sgd_job("dp-noised", {"noiseMultiplier": 2.0})
    result = simulate(parse_job(doc))
    last = result.history[-1]
    assert last.from_counts and last.accuracy is not None and last.accuracy > 0.6
    assert last.held_out_epsilon == pytest.approx(library_epsilon(1.0, 2.0, 5, 1e-5), rel=1e-9)
    epsilons = [h.held_out_epsilon for h in result.history]
    assert epsilons == sorted(epsilons), "spent privacy only grows"


def test_under_secure_aggregation_noised_counts_are_accounted_too() -> None:
    """With evaluation.noiseMultiplier each site noises its counts before masking them: the
    totals carry the noise, and the held-out epsilon is counted as for DP alone (3 rounds
    score versions 0-2, the final evaluation version 3)."""
    doc = manifest("secure-noised", sites=4, rounds=3, min_sites=4)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    doc["spec"]["evaluation"] = {"noiseMultiplier": 2.0}
    result = simulate(parse_job(doc))
    last = result.history[-1]
    assert last.from_counts and 0.0 <= last.accuracy <= 1.0
    assert last.held_out_epsilon == pytest.approx(library_epsilon(1.0, 2.0, 4, 1e-5), rel=1e-9)


def test_a_plain_job_that_asks_for_noised_scores_gets_them() -> None:
    doc = manifest("plain-noised", sites=3, rounds=2)
    doc["spec"]["evaluation"] = {"noiseMultiplier": 1.0}
    result = simulate(parse_job(doc))
    assert all(h.from_counts and h.accuracy_spread is None for h in result.history)
    assert result.history[-1].held_out_epsilon == pytest.approx(
        library_epsilon(1.0, 1.0, 3, 1e-5), rel=1e-9
    )
    for site in result.sites.values():
        assert "accuracy" not in site
