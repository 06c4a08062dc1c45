"""Update-level DP-FedAvg (McMahan et al. 2018): each update is clipped to L2 norm C, the
clipped updates are summed with equal weight, and Gaussian noise of standard deviation z*C is
added to the sum before it is divided by a fixed, public denominator: the job's number of
sites, not the number that answered (which the aggregator knows and could exploit: dividing
by it would make one site's sensitivity up to 2C/(n+1) instead of the C/n the noise assumes).
It wraps any strategy's server step (the mean it produces goes to the strategy's ``apply``).

The aggregator clips, so the guarantee does not rest on the sites' honesty; equal weights
bound each site's influence (sample-weighted means would not). The noise is a discrete
Gaussian from the operating system's CSPRNG, on a grid the mean is rounded to first
(``fedkube.privacy.secure_noise``): no seed to replay, no low-order float bits to read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkube.accumulate.base import Accumulator, UpdateSource
from fedkube.accumulate.weighted_mean import WeightedMean
from fedkube.privacy.secure_noise import add_gaussian_noise
from fedkube.wire.tensors import Params, TensorInfo


class DpFedAvgAccumulator(Accumulator):
    def __init__(
        self,
        infos: Sequence[TensorInfo],
        clip_norm: float,
        noise_multiplier: float,
        denominator: int,
    ) -> None:
        self.denominator = denominator
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.sum = WeightedMean(infos)
        self.infos = list(infos)
        self.count = 0
        self.clipped = 0

    def add(self, update: UpdateSource) -> None:
        try:
            norm = float(
                np.sqrt(
                    sum(
                        float(np.dot(v.astype(np.float64), v.astype(np.float64)))
                        for _, _, v in update.pieces()
                    )
                )
            )
            scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
            self.clipped += scale < 1.0
            for tensor, start, values in update.pieces():
                self.sum.fold(tensor, start, values, scale)  # weight 1, scaled to the clip
            self.sum.commit(1.0)
            self.count += 1
        finally:
            update.close()

    @property
    def unclipped(self) -> int:
        """Updates that fit under the clip (adaptive clipping counts them)."""
        return self.count - self.clipped

    def mean(self) -> Params:
        total = self.sum.mean()  # the clipped sum divided by the count...
        rescale = np.float32(self.count / self.denominator)  # ...then by the fixed denominator
        sd = self.noise_multiplier * self.clip_norm / self.denominator
        for value in total.values():
            value *= rescale
            # Noised on the grid in float64; the cast back is post-processing.
            value[...] = add_gaussian_noise(value, sd).astype(value.dtype)
        return total
