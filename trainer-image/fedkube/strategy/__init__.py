"""Aggregation strategies: one module each behind ``Strategy``. No torch, grpc or kopf."""

from __future__ import annotations

from fedkube.spec.job import JobSpec
from fedkube.strategy.base import Strategy, WeightedMean
from fedkube.strategy.fedavg import FedAvg


def build_strategy(spec: JobSpec) -> Strategy:
    name = spec.strategy.name
    if name == "fedavg":
        return FedAvg()
    raise ValueError(f"spec.strategy.name: unknown strategy {name!r}")  # the schema prevents it


__all__ = ["FedAvg", "Strategy", "WeightedMean", "build_strategy"]
