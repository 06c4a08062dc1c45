"""The update-level noise: a discrete Gaussian from the OS's CSPRNG, on a grid the value is
rounded to first. Nothing reproduces it, and no low-order float bits tell which sample it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fedkube.accumulate import ArrayUpdate, DpFedAvgAccumulator
from fedkube.privacy.secure_noise import add_gaussian_noise, discrete_gaussian, grid_step
from fedkube.wire.tensors import specs_of


def test_small_sigma_matches_the_discrete_gaussians_probabilities() -> None:
    sigma, n = 1.5, 400_000
    draws = discrete_gaussian(n, sigma)
    assert np.array_equal(draws, np.rint(draws))
    support = np.arange(-12, 13)
    weights = np.exp(-(support**2) / (2 * sigma**2))
    expected = weights / weights.sum()
    counts = np.array([(draws == k).sum() for k in support])
    assert counts.sum() == n  # nothing beyond eight sigma
    # Each probability within five standard errors of the count.
    tolerance = 5 * np.sqrt(n * expected * (1 - expected)) + 1
    assert np.all(np.abs(counts - n * expected) <= tolerance), (counts, n * expected)


@pytest.mark.parametrize("stddev", [1e-3, 0.7, 250.0])
def test_noise_has_the_asked_spread_and_lands_on_the_grid(stddev: float) -> None:
    values = np.linspace(-3, 3, 200_000)
    noised = add_gaussian_noise(values, stddev)
    step = grid_step(stddev)
    steps = noised / step
    assert np.array_equal(steps, np.rint(steps))  # exact multiples of the step
    noise = noised - values
    assert abs(noise.mean()) < 5 * stddev / math.sqrt(values.size)
    assert noise.std() == pytest.approx(stddev, rel=0.01)


def test_no_seed_reproduces_it() -> None:
    np.random.seed(0)
    first = add_gaussian_noise(np.zeros(1000), 1.0)
    np.random.seed(0)
    second = add_gaussian_noise(np.zeros(1000), 1.0)
    assert not np.array_equal(first, second)


def test_the_dp_fedavg_mean_is_never_noised_the_same_way_twice() -> None:
    infos = specs_of({"w": np.zeros(64, np.float32)})

    def mean() -> np.ndarray:
        acc = DpFedAvgAccumulator(infos, clip_norm=1.0, noise_multiplier=1.0, denominator=4)
        for _ in range(3):
            acc.add(ArrayUpdate(infos, {"w": np.full(64, 0.01, np.float32)}, 1.0))
        return acc.mean()["w"]

    a, b = mean(), mean()
    assert a.dtype == np.float32 and not np.array_equal(a, b)


def test_values_far_beyond_a_tiny_noise_still_land_exactly_on_a_grid() -> None:
    values = np.array([1e3, -7.25, 3.0e-3])
    noised = add_gaussian_noise(values, 1e-9)
    step = 2.0 ** math.ceil(math.log2(1e3 / 2.0**51))
    assert np.array_equal(noised / step, np.rint(noised / step))
    assert np.allclose(noised, values, rtol=0, atol=1e-7)
