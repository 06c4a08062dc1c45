"""Update-level differential privacy: clipping, noise, and the epsilon reported."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from fedkube.accumulate import ArrayUpdate, DpFedAvgAccumulator
from fedkube.errors import SpecError
from fedkube.privacy.accountant import RdpAccountant
from fedkube.spec import parse_job
from fedkube.testing import LocalJob, manifest
from fedkube.wire.tensors import specs_of

from tests.support.privacy import library_epsilon

GRID = list(itertools.product([0.01, 0.1, 1.0], [0.8, 1.1, 2.0], [10, 100, 1000]))


@pytest.mark.parametrize(("q", "z", "steps"), GRID)
def test_reported_epsilon_matches_the_library(q: float, z: float, steps: int) -> None:
    ours = RdpAccountant()
    for _ in range(steps // 2):  # round by round, as the aggregator does
        ours.step(z, q)
    ours = RdpAccountant.from_state(ours.state())  # through a checkpoint
    for _ in range(steps - steps // 2):
        ours.step(z, q)
    expected = library_epsilon(q, z, steps, 1e-5)
    assert ours.epsilon(1e-5) == pytest.approx(expected, rel=0.01)


def test_the_library_s_notices_about_orders_it_leaves_out_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At these settings dp-accounting cannot use orders 1.1 and 1.2 and says so at every
    call; the epsilon is still its own figure."""
    spend = RdpAccountant()
    spend.step(1.419162, 0.111111, 300)
    with caplog.at_level(logging.WARNING):
        epsilon = spend.epsilon(1e-5)
    assert not [r for r in caplog.records if "failed to converge" in r.getMessage()]
    library = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(0.111111, dp_accounting.GaussianDpEvent(1.419162))
    assert epsilon == library.compose(event, 300).get_epsilon(1e-5)


def test_clipping_bounds_each_update_and_weights_them_equally() -> None:
    infos = specs_of({"w": np.zeros(4, np.float32)})
    acc = DpFedAvgAccumulator(infos, clip_norm=1.0, noise_multiplier=0.0, denominator=2)
    big = np.array([10.0, 0, 0, 0], np.float32)
    small = np.array([0, 0.5, 0, 0], np.float32)
    acc.add(ArrayUpdate(infos, {"w": big}, weight=1000.0))  # many samples: no extra weight
    acc.add(ArrayUpdate(infos, {"w": small}, weight=1.0))
    assert acc.clipped == 1
    np.testing.assert_allclose(acc.mean()["w"], [0.5, 0.25, 0, 0], rtol=1e-6)


def test_the_mean_divides_by_the_jobs_sites_whoever_answered() -> None:
    """A public denominator: with 2 of 4 sites in, the sum is divided by 4, not 2, so a
    site's influence (and the noise's scale against it) does not depend on who answered."""
    infos = specs_of({"w": np.zeros(2, np.float32)})
    acc = DpFedAvgAccumulator(infos, clip_norm=1.0, noise_multiplier=0.0, denominator=4)
    acc.add(ArrayUpdate(infos, {"w": np.array([1.0, 0], np.float32)}, 1.0))
    acc.add(ArrayUpdate(infos, {"w": np.array([0, 1.0], np.float32)}, 1.0))
    np.testing.assert_allclose(acc.mean()["w"], [0.25, 0.25], rtol=1e-6)


def test_noise_has_the_promised_scale() -> None:
    infos = specs_of({"w": np.zeros(200_000, np.float32)})
    acc = DpFedAvgAccumulator(infos, clip_norm=2.0, noise_multiplier=1.5, denominator=1)
    acc.add(ArrayUpdate(infos, {"w": np.zeros(200_000, np.float32)}, 1.0))
    noise = acc.mean()["w"]
    assert float(noise.std()) == pytest.approx(3.0, rel=0.02)  # z * C for one site
    assert abs(float(noise.mean())) < 0.03


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"security": {"robustAggregation": {"method": "median"}}}, "choose one of them"),
        ({"strategy": {"name": "scaffold"}}, "control variates, which would leak"),
    ],
)
def test_combinations_that_cannot_work_are_refused(extra: dict, reason: str) -> None:
    doc = manifest()
    doc["spec"]["privacy"] = {"updateLevel": {"clipNorm": 1.0, "noiseMultiplier": 1.0}}
    doc["spec"].update(extra)
    with pytest.raises(SpecError, match=reason):
        parse_job(doc)


def test_round_0_under_differential_privacy_needs_secure_aggregation() -> None:
    """Round 0 would send each site's counts and sums in the clear; under secure
    aggregation only their sum leaves."""
    for level in ({"updateLevel": {"clipNorm": 1.0, "noiseMultiplier": 1.0}},
                  {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}):  # fmt: skip
        doc = manifest(sites=3)
        doc["spec"]["privacy"] = level
        for site in doc["spec"]["sites"]:
            site["data"]["standardize"] = "federated"
        with pytest.raises(SpecError, match=r"needs security\.secureAggregation: round 0"):
            parse_job(doc)
        doc["spec"]["security"] = {"secureAggregation": {}}
        assert parse_job(doc).spec.needs_statistics()


def test_a_private_job_reports_the_epsilon_it_spent(tmp_path: Path) -> None:
    doc = manifest("private", sites=3, rounds=4, min_sites=3)
    doc["spec"]["privacy"] = {
        "updateLevel": {"clipNorm": 0.5, "noiseMultiplier": 1.2, "delta": 1e-4}
    }
    job = LocalJob(tmp_path, doc)
    result = job.run()
    privacy = result.privacy
    assert privacy.delta == 1e-4
    assert privacy.epsilon == pytest.approx(library_epsilon(1.0, 1.2, 4, 1e-4), rel=0.01)
    epsilons = [h.epsilon for h in result.history]
    assert epsilons == sorted(epsilons) and epsilons[0] > 0, "spent grows round by round"


def test_sites_that_do_not_answer_do_not_lower_the_epsilon_reported(tmp_path: Path) -> None:
    """Who answers a round is neither random nor secret (the aggregator sees it, and a site
    may be down for reasons tied to its data), so dropped sites give no amplification: the
    epsilon is the library's at sampling rate 1, as if every site had answered."""
    doc = manifest("dropped", sites=4, rounds=4, min_sites=2, timeout=20)
    doc["spec"]["joinGraceSeconds"] = 1
    doc["spec"]["privacy"] = {
        "updateLevel": {"clipNorm": 0.5, "noiseMultiplier": 1.2, "delta": 1e-4}
    }
    job = LocalJob(tmp_path, doc)
    try:
        job.start_aggregator()
        for site in ("site-0", "site-1"):  # half the sites never come
            job.start_trainer(site)
        result = job.wait_done()
    finally:
        job.stop()
    assert all(h.sites == ["site-0", "site-1"] for h in result.history)
    assert result.privacy is not None
    assert result.privacy.epsilon == pytest.approx(library_epsilon(1.0, 1.2, 4, 1e-4), rel=0.01)
    # What the old accounting (the share of sites as the sampling rate) would have reported.
    assert result.privacy.epsilon > 1.5 * library_epsilon(0.5, 1.2, 4, 1e-4)


def test_adaptive_clip_follows_the_target_quantile_of_the_norms() -> None:
    """Twenty updates a round with norms spread over two orders of magnitude; from a clip
    100x too small, the clip settles near the norms' median (no noise, to see the rule)."""
    from fedkube.privacy.adaptive_clip import AdaptiveClip

    rng = np.random.default_rng(0)
    infos = specs_of({"w": np.zeros(8, np.float32)})
    clip = AdaptiveClip(
        0.01, noise_multiplier=0.0, target_quantile=0.5, learning_rate=0.2, count_stddev=0.0
    )
    seen = []
    for _ in range(150):
        acc = DpFedAvgAccumulator(infos, clip.clip_norm, 0.0, denominator=20)
        norms = rng.lognormal(mean=0.0, sigma=1.0, size=20)  # median 1.0
        for n in norms:
            direction = rng.normal(size=8)
            w = (direction / np.linalg.norm(direction) * n).astype(np.float32)
            acc.add(ArrayUpdate(infos, {"w": w}, 1.0))
        acc.mean()
        clip.observe(acc.count - acc.clipped, acc.count)
        seen.append(clip.clip_norm)
    settled = float(np.median(seen[-50:]))
    assert 0.8 < settled < 1.25, settled
    assert seen[10] < seen[40], "it climbs from a clip far too small"


def test_adaptive_clipping_costs_no_extra_epsilon() -> None:
    """The count's noise and the updates' raised noise compose to the configured z."""
    from fedkube.privacy.adaptive_clip import default_count_stddev, update_noise_multiplier

    for z in (0.5, 1.0, 3.0):
        sb = default_count_stddev(z)
        zu = update_noise_multiplier(z, sb)
        assert zu**-2 + (2 * sb) ** -2 == pytest.approx(z**-2)
        assert zu == pytest.approx(z / 0.9**0.5)  # a tenth of the privacy on the count
    with pytest.raises(ValueError, match=r"countStddev 0\.4 is too small"):
        update_noise_multiplier(1.0, 0.4)
    doc = manifest()
    doc["spec"]["privacy"] = {
        "updateLevel": {
            "clipNorm": 1.0,
            "noiseMultiplier": 1.0,
            "adaptiveClipping": {"countStddev": 0.4},
        }
    }
    with pytest.raises(SpecError, match=r"spec\.privacy\.updateLevel: .*raise it above 0\.5"):
        parse_job(doc)


def test_an_adaptive_job_moves_its_clip_and_reports_it(tmp_path: Path) -> None:
    doc = manifest("adaptive", sites=3, rounds=6, min_sites=3)
    doc["spec"]["privacy"] = {
        "updateLevel": {
            "clipNorm": 100.0,  # far above every update: the clip must come down
            "noiseMultiplier": 0.0,
            "adaptiveClipping": {"targetQuantile": 0.5, "learningRate": 0.5},
        }
    }
    job = LocalJob(tmp_path, doc)
    result = job.run()
    clips = [h.clip_norm for h in result.history]
    assert clips[0] == 100.0
    assert all(b < a for a, b in itertools.pairwise(clips)), clips
    assert [h.unclipped_share for h in result.history] == [1.0] * 6
    assert result.privacy.clip_norm == pytest.approx(100.0 * np.exp(-0.5 * 0.5) ** 6)


def test_dp_noise_is_shared_among_the_sites_under_secure_aggregation(tmp_path: Path) -> None:
    """With secure aggregation the aggregator cannot clip or noise one update: the sites do,
    each adding its share of the noise; the epsilon is the central mechanism's."""
    doc = manifest("private-secure", sites=4, rounds=3, min_sites=4)
    doc["spec"]["privacy"] = {
        "updateLevel": {"clipNorm": 0.5, "noiseMultiplier": 0.8, "delta": 1e-4}
    }
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    job = LocalJob(tmp_path, doc)
    result = job.run()
    assert all(h.secure_aggregation.revealed_by == 4 for h in result.history)
    assert result.privacy.epsilon == pytest.approx(library_epsilon(1.0, 0.8, 3, 1e-4), rel=0.01)
