"""FedAvg (McMahan et al. 2017): the next model is the sample-weighted mean of site models."""

from __future__ import annotations

from fedkube.strategy.base import Strategy
from fedkube.wire.tensors import Params


class FedAvg(Strategy):
    name = "fedavg"

    def apply(self, params: Params, mean_update: Params, round: int, participants: int) -> Params:
        for name, delta in mean_update.items():
            delta += params[name]
        return mean_update
