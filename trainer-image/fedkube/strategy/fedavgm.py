"""FedAvgM (Hsu et al. 2019): server momentum on the mean update, v <- beta v + delta,
x <- x + eta v."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedkube.strategy.base import Strategy
from fedkube.wire.tensors import Params


class FedAvgM(Strategy):
    name = "fedavgm"

    def __init__(self, server_learning_rate: float, momentum: float) -> None:
        self.lr = np.float32(server_learning_rate)
        self.beta = np.float32(momentum)
        self.velocity: Params = {}

    def apply(self, params: Params, mean_update: Params, round: int, participants: int) -> Params:
        for name, delta in mean_update.items():
            v = self.velocity.get(name)
            if v is None:
                v = self.velocity[name] = np.zeros_like(delta)
            v *= self.beta
            v += delta
            np.multiply(v, self.lr, out=delta)
            delta += params[name]
        return mean_update

    def state_arrays(self) -> Params:
        return {f"velocity/{k}": v for k, v in self.velocity.items()}

    def load_state(self, arrays: Params, meta: dict[str, Any]) -> None:
        self.velocity = {k.removeprefix("velocity/"): v.copy() for k, v in arrays.items()}
