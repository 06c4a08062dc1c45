"""SCAFFOLD (Karimireddy et al. 2020): a server control variate c, and one per site c_i,
correct each site's local steps (g - c_i + c) so that sites with different data stop
drifting toward their own optima.

The server sends c with the model; each update carries the model delta and the site's
control-variate delta. Then x <- x + eta_g mean(delta_y) and c <- c + |S|/N mean(delta_c).
Means are sample-weighted, as for every strategy here. The site half (``ScaffoldSite``)
keeps c_i.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedkube.strategy.base import LocalAdjustments, SiteHalf, Strategy
from fedkube.wire.tensors import Params, TensorInfo

CONTROL = "scaffold.c/"  # the server control variate, sent with the model
CONTROL_DELTA = "scaffold.dc/"  # a site's control-variate delta, sent with its update


class Scaffold(Strategy):
    name = "scaffold"

    def __init__(self, server_learning_rate: float, total_sites: int) -> None:
        self.lr = np.float32(server_learning_rate)
        self.total_sites = total_sites
        self.control: Params = {}

    def client_config(self, round: int) -> dict[str, float]:
        return {"scaffold": 1.0}

    def site_half(self) -> SiteHalf:
        return ScaffoldSite()

    def _ensure(self, model: Sequence[TensorInfo]) -> None:
        for info in model:
            if info.name not in self.control:
                self.control[info.name] = np.zeros(info.shape, dtype=info.dtype)

    def broadcast_arrays(self) -> Params:
        return {CONTROL + k: v for k, v in self.control.items()}

    def update_extras(self, model: Sequence[TensorInfo]) -> list[TensorInfo]:
        self._ensure(model)
        return [TensorInfo(CONTROL_DELTA + i.name, i.dtype, i.shape) for i in model]

    def apply(self, params: Params, mean_update: Params, round: int, participants: int) -> Params:
        share = np.float32(participants / self.total_sites)
        out: Params = {}
        for name, delta in mean_update.items():
            if name.startswith(CONTROL_DELTA):
                # A new array: the old control variate may be on its way to a site.
                key = name.removeprefix(CONTROL_DELTA)
                self.control[key] = self.control[key] + share * delta
                continue
            delta *= self.lr
            delta += params[name]
            out[name] = delta
        return out

    def state_arrays(self) -> Params:
        return {f"control/{k}": v for k, v in self.control.items()}

    def load_state(self, arrays: Params, meta: dict[str, Any]) -> None:
        self.control = {k.removeprefix("control/"): v.copy() for k, v in arrays.items()}


class ScaffoldSite(SiteHalf):
    """The site's half: its control variate c_i (option II of the paper).

    After K steps of size eta, c_i+ = c_i - c + (x - y) / (K eta), sent as delta c = c_i+ - c_i.
    The new c_i is only kept once a later round shows the update was taken: a round that is
    tried again (the aggregator restarted) trains from the same c_i, so it gives the same
    update as the first time.
    """

    def __init__(self) -> None:
        self.c_i: Params = {}
        self._pending: tuple[int, Params] | None = None

    def adjustments(self, round: int, sent: Params) -> LocalAdjustments:
        if self._pending is not None:
            trained_in, c_new = self._pending
            if trained_in < round:
                self.c_i = c_new
            self._pending = None
        correction: Params = {}
        for key, c in sent.items():
            if key.startswith(CONTROL):
                name = key.removeprefix(CONTROL)
                c_i = self.c_i.get(name)
                correction[name] = c - c_i if c_i is not None else c.copy()
        return LocalAdjustments(grad_correction=correction)

    def update_extras(self, round: int, update: Params, step_size: float, sent: Params) -> Params:
        out: Params = {}
        c_new: Params = {}
        for name, dy in update.items():
            c = sent.get(CONTROL + name, np.zeros_like(dy))
            c_i = self.c_i.get(name, np.zeros_like(dy))
            # (x - y) / (K eta) with y - x = dy.
            c_next = c_i - c - dy / np.float32(max(step_size, 1e-12))
            c_new[name] = c_next
            out[CONTROL_DELTA + name] = c_next - c_i
        self._pending = (round, c_new)
        return out
