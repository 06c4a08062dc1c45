"""The privacy accountant: what has been spent, as epsilon at a delta.

Thin state over dp-accounting's Rényi-DP maths (Google's maintained library): it records
each round's Gaussian mechanism (noise multiplier, sampling rate) and asks the library for
epsilon. No privacy maths is written here. The state is a short list of numbers, so it goes
through checkpoints as JSON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


class _FractionalOrderNotice(logging.Filter):
    """dp-accounting warns, once per order and per call, when its series for a fractional
    Rényi order near 1 does not converge, then leaves that order out, as it should: the
    epsilon comes from the other orders. In a round loop that is hundreds of lines a job
    that tell a user nothing; they are dropped here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_compute_log_a_frac failed to converge")


logging.getLogger("absl").addFilter(_FractionalOrderNotice())


@dataclass
class RdpAccountant:
    """Poisson-sampled Gaussian mechanisms, composed."""

    # (sampling rate, noise multiplier, steps), merged when the same pair repeats.
    history: list[tuple[float, float, int]] = field(default_factory=list)

    def step(self, noise_multiplier: float, sampling_rate: float, steps: int = 1) -> None:
        if self.history and self.history[-1][:2] == (sampling_rate, noise_multiplier):
            q, z, n = self.history[-1]
            self.history[-1] = (q, z, n + steps)
        else:
            self.history.append((sampling_rate, noise_multiplier, steps))

    def epsilon(self, delta: float) -> float:
        import dp_accounting

        accountant = dp_accounting.rdp.RdpAccountant()
        for q, z, n in self.history:
            event = dp_accounting.GaussianDpEvent(z)
            if q < 1:
                event = dp_accounting.PoissonSampledDpEvent(q, event)
            accountant.compose(event, n)
        return float(accountant.get_epsilon(delta))

    def state(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RdpAccountant:
        return cls([(float(q), float(z), int(n)) for q, z, n in state.get("history", [])])


def noise_for_epsilon(epsilon: float, sampling_rate: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier that keeps ``steps`` sampled Gaussian steps within
    ``epsilon`` at ``delta`` (bisection on the accountant)."""
    low, high = 0.1, 100.0
    spend = RdpAccountant()
    spend.step(high, sampling_rate, steps)
    if spend.epsilon(delta) > epsilon:
        raise ValueError(f"epsilon {epsilon} is out of reach in {steps} steps")
    for _ in range(40):
        mid = (low + high) / 2
        trial = RdpAccountant()
        trial.step(mid, sampling_rate, steps)
        low, high = (mid, high) if trial.epsilon(delta) > epsilon else (low, mid)
    return high
