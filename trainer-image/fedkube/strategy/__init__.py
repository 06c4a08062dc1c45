"""Aggregation strategies: one module each behind ``Strategy``, server and site halves side by
side. No torch, grpc or kopf."""

from __future__ import annotations

from fedkube.spec.job import JobSpec
from fedkube.spec.task import FedAvgMSpec, FedAvgSpec, FedOptSpec, FedProxSpec, ScaffoldSpec
from fedkube.strategy.base import LocalAdjustments, SiteHalf, Strategy
from fedkube.strategy.fedavg import FedAvg
from fedkube.strategy.fedavgm import FedAvgM
from fedkube.strategy.fedopt import FedOpt
from fedkube.strategy.fedprox import FedProx
from fedkube.strategy.scaffold import Scaffold


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


__all__ = [
    "FedAvg",
    "FedAvgM",
    "FedOpt",
    "FedProx",
    "LocalAdjustments",
    "Scaffold",
    "SiteHalf",
    "Strategy",
    "build_strategy",
]
