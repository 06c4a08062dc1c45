"""Update-level differential privacy as the coordinator sees it: after each round, the
accountant's step and the adaptive clip's move; their state rides in the checkpoint."""

from __future__ import annotations

from typing import Any

from fedkube.accumulate import DpFedAvgAccumulator
from fedkube.accumulate.base import Accumulator
from fedkube.privacy.accountant import RdpAccountant
from fedkube.privacy.adaptive_clip import AdaptiveClip
from fedkube.spec.job import JobSpec
from fedkube.spec.progress import PrivacyReport, RoundRecord


class PrivacyHook:
    def __init__(self, spec: JobSpec) -> None:
        self.dp = spec.privacy.update_level
        self.total_sites = len(spec.sites)
        # Privacy spent by update-level DP, one Gaussian mechanism per round.
        self.accountant = RdpAccountant()
        self.adaptive_clip = AdaptiveClip.for_job(spec)

    def after_round(
        self, record: RoundRecord, participants: int, accumulator: Accumulator | None
    ) -> None:
        if self.dp is None:
            return
        # Who answers a round is neither random nor secret: no amplification by sampling.
        self.accountant.step(self.dp.noise_multiplier, 1.0)
        record.epsilon = self.accountant.epsilon(self.dp.delta)
        if self.adaptive_clip is not None and isinstance(accumulator, DpFedAvgAccumulator):
            record.clip_norm = self.adaptive_clip.clip_norm
            record.unclipped_share = self.adaptive_clip.observe(
                accumulator.unclipped, accumulator.count
            )

    def report(self, history: list[RoundRecord]) -> PrivacyReport | None:
        if self.dp is None:
            return None
        spent = history[-1].epsilon if history and history[-1].epsilon is not None else 0.0
        clip = self.adaptive_clip.clip_norm if self.adaptive_clip else self.dp.clip_norm
        return PrivacyReport(
            epsilon=spent,
            delta=self.dp.delta,
            noise_multiplier=self.dp.noise_multiplier,
            clip_norm=clip,
        )

    def state(self) -> dict[str, Any]:
        return {
            **self.accountant.state(),
            **(self.adaptive_clip.state() if self.adaptive_clip else {}),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.accountant = RdpAccountant.from_state(state)
        if self.adaptive_clip is not None:
            self.adaptive_clip.load_state(state)
