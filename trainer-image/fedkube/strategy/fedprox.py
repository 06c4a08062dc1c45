"""FedProx (Li et al. 2020): FedAvg on the server; each site adds mu/2 ||w - w_global||^2 to
its loss, which keeps local models near the global one when site data differ."""

from __future__ import annotations

from fedkube.strategy.base import LocalAdjustments, SiteHalf
from fedkube.strategy.fedavg import FedAvg
from fedkube.wire.tensors import Params

PROXIMAL_MU = "proximal_mu"


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float) -> None:
        self.mu = mu

    def client_config(self, round: int) -> dict[str, float]:
        return {PROXIMAL_MU: self.mu}

    def site_half(self) -> SiteHalf:
        return FedProxSite(self.mu)


class FedProxSite(SiteHalf):
    def __init__(self, mu: float) -> None:
        self.mu = mu

    def adjustments(self, round: int, sent: Params) -> LocalAdjustments:
        return LocalAdjustments(proximal_mu=self.mu)
