"""Aggregation strategies: one module each behind ``Strategy``. No torch, grpc or kopf."""

from __future__ import annotations

from fedkube.privacy.adaptive_clip import AdaptiveClip
from fedkube.spec.job import (
    FedAvgMSpec,
    FedAvgSpec,
    FedOptSpec,
    FedProxSpec,
    JobSpec,
    ScaffoldSpec,
)
from fedkube.strategy.base import Accumulator, ArrayUpdate, Strategy, UpdateSource, WeightedMean
from fedkube.strategy.dp_fedavg import DpFedAvgAccumulator
from fedkube.strategy.fedavg import FedAvg
from fedkube.strategy.fedavgm import FedAvgM
from fedkube.strategy.fedopt import FedOpt
from fedkube.strategy.fedprox import FedProx
from fedkube.strategy.median import CoordinateMedian
from fedkube.strategy.multi_krum import MultiKrum
from fedkube.strategy.scaffold import Scaffold
from fedkube.strategy.trimmed_mean import TrimmedMean
from fedkube.wire.tensors import TensorInfo


def build_strategy(spec: JobSpec) -> Strategy:
    s = spec.strategy
    if isinstance(s, FedAvgSpec):
        return FedAvg()
    if isinstance(s, FedProxSpec):
        return FedProx(s.mu)
    if isinstance(s, FedAvgMSpec):
        return FedAvgM(s.server_learning_rate, s.momentum)
    if isinstance(s, FedOptSpec):
        return FedOpt(s.name, s.server_learning_rate, s.beta1, s.beta2, s.tau)
    if isinstance(s, ScaffoldSpec):
        return Scaffold(s.server_learning_rate, total_sites=len(spec.sites))
    raise AssertionError(f"no strategy for {s!r}")  # the schema admits no other


def build_accumulator(
    spec: JobSpec,
    strategy: Strategy,
    infos: list[TensorInfo],
    clip: AdaptiveClip | None = None,
) -> Accumulator:
    """How a round's updates become one: the strategy's mean, or a robust combination that
    replaces the mean under any strategy (security.robustAggregation). ``clip`` is the
    current adaptive clip when privacy.updateLevel.adaptiveClipping is on."""
    dp = spec.privacy.update_level
    if dp is not None:
        if clip is not None:
            return DpFedAvgAccumulator(infos, clip.clip_norm, clip.update_noise_multiplier)
        return DpFedAvgAccumulator(infos, dp.clip_norm, dp.noise_multiplier)
    robust = spec.security.robust_aggregation
    if robust is None:
        return strategy.new_accumulator(infos)
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
    "FedAvg",
    "FedAvgM",
    "FedOpt",
    "FedProx",
    "MultiKrum",
    "Scaffold",
    "Strategy",
    "TrimmedMean",
    "UpdateSource",
    "WeightedMean",
    "build_accumulator",
    "build_strategy",
]
