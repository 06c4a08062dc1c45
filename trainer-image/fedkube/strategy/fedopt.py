"""The FedOpt family (Reddi et al. 2021, Algorithm 2): the mean update is a pseudo-gradient
for an adaptive server optimiser.

    m <- beta1 m + (1 - beta1) delta
    v <- beta2 v + (1 - beta2) delta^2                          FedAdam
    v <- v - (1 - beta2) delta^2 sign(v - delta^2)             FedYogi
    v <- v + delta^2                                            FedAdagrad
    x <- x + eta m / (sqrt(v) + tau)

As in the paper, without Adam's bias correction; m and v start at zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedkube.strategy.base import Strategy
from fedkube.wire.tensors import Params


class FedOpt(Strategy):
    name = "fedopt"

    def __init__(
        self, variant: str, server_learning_rate: float, beta1: float, beta2: float, tau: float
    ) -> None:
        if variant not in ("fedadam", "fedyogi", "fedadagrad"):
            raise ValueError(f"unknown FedOpt variant {variant!r}")
        self.variant = variant
        self.lr = np.float32(server_learning_rate)
        self.beta1 = np.float32(beta1)
        self.beta2 = np.float32(beta2)
        self.tau = np.float32(tau)
        self.m: Params = {}
        self.v: Params = {}

    def apply(self, params: Params, mean_update: Params, round: int, participants: int) -> Params:
        one = np.float32(1)
        for name, delta in mean_update.items():
            m = self.m.setdefault(name, np.zeros_like(delta))
            v = self.v.setdefault(name, np.zeros_like(delta))
            m *= self.beta1
            m += (one - self.beta1) * delta
            sq = np.square(delta)
            if self.variant == "fedadam":
                v *= self.beta2
                v += (one - self.beta2) * sq
            elif self.variant == "fedyogi":
                v -= (one - self.beta2) * sq * np.sign(v - sq)
            else:
                v += sq
            np.sqrt(v, out=delta)
            delta += self.tau
            np.divide(m, delta, out=delta)
            delta *= self.lr
            delta += params[name]
        return mean_update

    def state_arrays(self) -> Params:
        return {
            **{f"m/{k}": a for k, a in self.m.items()},
            **{f"v/{k}": a for k, a in self.v.items()},
        }

    def load_state(self, arrays: Params, meta: dict[str, Any]) -> None:
        self.m = {k[2:]: a.copy() for k, a in arrays.items() if k.startswith("m/")}
        self.v = {k[2:]: a.copy() for k, a in arrays.items() if k.startswith("v/")}
