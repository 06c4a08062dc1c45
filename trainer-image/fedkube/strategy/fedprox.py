"""FedProx (Li et al. 2020): FedAvg on the server; each site adds mu/2 ||w - w_global||^2 to
its loss, which keeps local models near the global one when site data differ."""

from __future__ import annotations

from fedkube.strategy.fedavg import FedAvg

PROXIMAL_MU = "proximal_mu"


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float) -> None:
        self.mu = mu

    def client_config(self, round: int) -> dict[str, float]:
        return {PROXIMAL_MU: self.mu}
