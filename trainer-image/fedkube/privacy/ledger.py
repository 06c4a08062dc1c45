"""A site's record-level privacy ledger: the epsilon its DP-SGD steps spent, kept in a file
of the site's own so that a restarted trainer does not forget it, and the cap it stops at."""

from __future__ import annotations

import json
from pathlib import Path

from fedkube.errors import PrivacyBudgetExhausted
from fedkube.privacy.accountant import RdpAccountant
from fedkube.storage.atomic import write_json


class PrivacyLedger:
    """What this site's DP-SGD has spent, kept in a file of the site's own (if given) so that a
    restarted trainer does not forget it."""

    def __init__(self, delta: float, cap: float | None, path: Path | None = None) -> None:
        self.delta = delta
        self.cap = cap
        self.path = path
        self.accountant = RdpAccountant()
        if path is not None and path.exists():
            self.accountant = RdpAccountant.from_state(json.loads(path.read_text()))

    @property
    def epsilon(self) -> float:
        return self.accountant.epsilon(self.delta) if self.accountant.history else 0.0

    def check(self, noise_multiplier: float, sampling_rate: float, steps: int) -> None:
        if self.cap is None:
            return
        trial = RdpAccountant(list(self.accountant.history))
        trial.step(noise_multiplier, sampling_rate, steps)
        after = trial.epsilon(self.delta)
        if after > self.cap:
            raise PrivacyBudgetExhausted(
                f"another round would bring this site's epsilon to {after:.3f} (delta "
                f"{self.delta:g}), above its cap {self.cap:g}; the site stops contributing"
            )

    def spend(self, noise_multiplier: float, sampling_rate: float, steps: int) -> None:
        self.accountant.step(noise_multiplier, sampling_rate, steps)
        if self.path is not None:
            write_json(self.path, self.accountant.state())
