"""A site's record-level privacy ledger for one job: the epsilon its DP-SGD steps spent and
its noised held-out releases, kept in a file of the site's own so that a restarted trainer
does not forget them, and the cap training stops at. With the dataset's budget (one per
dataset, across jobs) each spend is also written there, and training stops where the
dataset's other jobs and this one would pass the site's cap."""

from __future__ import annotations

import json
from pathlib import Path

from fedkube.errors import PrivacyBudgetExhausted
from fedkube.privacy.accountant import RdpAccountant
from fedkube.privacy.dataset_budget import DatasetBudget
from fedkube.storage.atomic import write_json


class PrivacyLedger:
    """What this site's DP-SGD has spent, kept in a file of the site's own (if given) so that a
    restarted trainer does not forget it."""

    def __init__(
        self,
        delta: float,
        cap: float | None,
        path: Path | None = None,
        dataset: DatasetBudget | None = None,
    ) -> None:
        self.delta = delta
        self.cap = cap
        self.path = path
        self.dataset = dataset
        self.accountant = RdpAccountant()
        # The noised releases of its held-out counts (evaluation.noiseMultiplier): one
        # Gaussian mechanism over all of them each, at q = 1. Counted here, by the site,
        # whatever the aggregator reports.
        self.held_out = RdpAccountant()
        if path is not None and path.exists():
            state = json.loads(path.read_text())
            self.accountant = RdpAccountant.from_state(state)
            self.held_out = RdpAccountant.from_state({"history": state.get("heldOut", [])})
        if dataset is not None:
            # A restarted trainer: the dataset's ledger holds at least what this job spent.
            dataset.record(self.total, delta, self.held_out_epsilon)

    @property
    def epsilon(self) -> float:
        return self.accountant.epsilon(self.delta) if self.accountant.history else 0.0

    def check(self, noise_multiplier: float, sampling_rate: float, steps: int) -> None:
        budget = self.dataset if self.dataset is not None and self.dataset.cap is not None else None
        if self.cap is None and budget is None:
            return
        trial = RdpAccountant(list(self.accountant.history))
        trial.step(noise_multiplier, sampling_rate, steps)
        after = trial.epsilon(self.delta)
        if self.cap is not None and after > self.cap:
            raise PrivacyBudgetExhausted(
                f"another round would bring this site's epsilon to {after:.3f} (delta "
                f"{self.delta:g}), above its cap {self.cap:g}; the site stops contributing"
            )
        if budget is not None and budget.cap is not None:
            others = budget.held_by_others()
            if others + after + self.held_out_epsilon > budget.cap:
                raise PrivacyBudgetExhausted(
                    f"another round would bring dataset {budget.dataset.describe()} to epsilon "
                    f"{others + after + self.held_out_epsilon:.3f} over every job that reads it "
                    f"({others:.3f} held by others), above the site's cap {budget.cap:g} (Helm "
                    "value site.epsilonCap); the site stops contributing"
                )

    @property
    def total(self) -> float:
        """What this job spent of the records' privacy: training and held-out scores,
        summed (they are disjoint records, so the sum overstates it, never understates)."""
        return self.epsilon + self.held_out_epsilon

    @property
    def held_out_epsilon(self) -> float:
        return self.held_out.epsilon(self.delta) if self.held_out.history else 0.0

    def spend(self, noise_multiplier: float, sampling_rate: float, steps: int) -> None:
        self.accountant.step(noise_multiplier, sampling_rate, steps)
        self._save()

    def spend_held_out(self, noise_multiplier: float) -> None:
        self.held_out.step(noise_multiplier, 1.0, 1)
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            state = self.accountant.state()
            state["heldOut"] = self.held_out.state()["history"]
            write_json(self.path, state)
        if self.dataset is not None:
            self.dataset.record(self.total, self.delta, self.held_out_epsilon)
