"""Pure: which tensors an update of a round carries, and which rounds score their model.
Sites derive the same from their own manifest; the aggregator checks headers against it."""

from __future__ import annotations

from dataclasses import dataclass

from fedkube.aggregator.rounds import STATISTICS_ROUND, OpenRound
from fedkube.wire.tensors import TensorInfo


@dataclass(frozen=True)
class RoundShapes:
    update: list[TensorInfo]  # the model's delta and the strategy's extras
    scores: TensorInfo  # the evaluation counts, as a masked update carries them
    statistics: list[TensorInfo]  # round 0's sums and counts
    every_rounds: int  # evaluation.everyRounds

    def of(self, r: OpenRound) -> list[TensorInfo]:
        """The tensors an update of this round carries (before masking)."""
        if r.number == STATISTICS_ROUND:
            return list(self.statistics)
        return self.training(r.evaluate and r.secure is not None, r.scores_only)

    def training(self, with_scores: bool, scores_only: bool = False) -> list[TensorInfo]:
        """A training round's update, and under secure aggregation the sites' evaluation
        counts after it when the round evaluates (only those in the final evaluation)."""
        infos = [] if scores_only else list(self.update)
        if with_scores or scores_only:
            infos.append(self.scores)
        return infos

    def evaluates(self, version: int) -> bool:
        """Whether the round that trains model ``version`` scores it first."""
        return version % self.every_rounds == 0
