"""Adaptive clipping for DP-FedAvg (Andrew et al. 2021, "Differentially Private Learning with
Adaptive Clipping"): the clip norm follows a quantile of the updates' norms instead of being
guessed up front.

Each round, the share of updates that were not clipped is counted, with Gaussian noise of
standard deviation ``count_stddev`` added to the count; the clip moves geometrically toward
the target quantile: ``C <- C * exp(-learning_rate * (noised_share - target_quantile))``.
The count spends privacy too, so the updates' noise multiplier rises to z_update with
``z_update^-2 = z^-2 - (2 * count_stddev)^-2``; the two releases together are worth one
Gaussian mechanism of multiplier z, which is what the accountant records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedkube.privacy.secure_noise import discrete_gaussian
from fedkube.spec.job import JobSpec

# Without a countStddev, the count takes a tenth of the privacy (z_update^-2 = 0.9 z^-2).
DEFAULT_COUNT_SHARE = 0.1


def default_count_stddev(noise_multiplier: float) -> float:
    """(2 * count_stddev)^-2 = DEFAULT_COUNT_SHARE * z^-2."""
    return noise_multiplier / (2.0 * math.sqrt(DEFAULT_COUNT_SHARE))


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """The updates' multiplier that, with the count's noise, composes to ``noise_multiplier``."""
    if noise_multiplier == 0:
        return 0.0
    rest = noise_multiplier**-2 - (2.0 * count_stddev) ** -2
    if rest <= 0:
        raise ValueError(
            f"countStddev {count_stddev:g} is too small for noiseMultiplier "
            f"{noise_multiplier:g}: it must be above {1 / (2 * noise_multiplier):g}"
        )
    return float(rest**-0.5)


@dataclass
class AdaptiveClip:
    clip_norm: float
    noise_multiplier: float
    target_quantile: float
    learning_rate: float
    count_stddev: float

    @classmethod
    def for_job(cls, spec: JobSpec) -> AdaptiveClip | None:
        dp = spec.privacy.update_level
        if dp is None or dp.adaptive_clipping is None:
            return None
        a = dp.adaptive_clipping
        z = dp.noise_multiplier
        return cls(
            clip_norm=dp.clip_norm,
            noise_multiplier=z,
            target_quantile=a.target_quantile,
            learning_rate=a.learning_rate,
            count_stddev=a.count_stddev or (default_count_stddev(z) if z > 0 else 0.0),
        )

    @property
    def update_noise_multiplier(self) -> float:
        return update_noise_multiplier(self.noise_multiplier, self.count_stddev)

    def observe(self, unclipped: int, updates: int) -> float:
        """Move the clip after a round in which ``unclipped`` of ``updates`` fit under it;
        returns the noised share that moved it."""
        noised = float(unclipped)
        if self.noise_multiplier > 0:
            # The count has sensitivity 1: a discrete Gaussian on the integers protects it.
            noised += float(discrete_gaussian(1, self.count_stddev)[0])
        share = noised / max(updates, 1)
        self.clip_norm *= math.exp(-self.learning_rate * (share - self.target_quantile))
        return share

    def state(self) -> dict[str, Any]:
        return {"clipNorm": self.clip_norm}

    def load_state(self, state: dict[str, Any]) -> None:
        if "clipNorm" in state:
            self.clip_norm = float(state["clipNorm"])
