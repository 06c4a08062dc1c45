"""Accumulators: how a round's updates become one (the mean, DP-FedAvg's clipped and noised
sum, or a robust combination). One module each behind ``Accumulator``. No torch or grpc."""

from __future__ import annotations

from fedkube.accumulate.base import Accumulator, ArrayUpdate, UpdateSource
from fedkube.accumulate.dp_fedavg import DpFedAvgAccumulator
from fedkube.accumulate.median import CoordinateMedian
from fedkube.accumulate.multi_krum import MultiKrum
from fedkube.accumulate.trimmed_mean import TrimmedMean
from fedkube.accumulate.weighted_mean import WeightedMean
from fedkube.privacy.adaptive_clip import AdaptiveClip
from fedkube.spec.job import JobSpec
from fedkube.wire.tensors import TensorInfo


def build_accumulator(
    spec: JobSpec, infos: list[TensorInfo], clip: AdaptiveClip | None = None
) -> Accumulator:
    """How a round's updates become one: the mean, or a robust combination that replaces the
    mean under any strategy (security.robustAggregation). ``clip`` is the current adaptive
    clip when privacy.updateLevel.adaptiveClipping is on."""
    dp = spec.privacy.update_level
    if dp is not None:
        sites = len(spec.sites)
        if clip is not None:
            return DpFedAvgAccumulator(infos, clip.clip_norm, clip.update_noise_multiplier, sites)
        return DpFedAvgAccumulator(infos, dp.clip_norm, dp.noise_multiplier, sites)
    robust = spec.security.robust_aggregation
    if robust is None:
        return WeightedMean(infos)
    if robust.method == "median":
        return CoordinateMedian(infos)
    if robust.method == "trimmed_mean":
        return TrimmedMean(infos, robust.trim_fraction)
    return MultiKrum(infos, robust.byzantine_sites, robust.selected)


__all__ = [
    "Accumulator",
    "ArrayUpdate",
    "CoordinateMedian",
    "DpFedAvgAccumulator",
    "MultiKrum",
    "TrimmedMean",
    "UpdateSource",
    "WeightedMean",
    "build_accumulator",
]
