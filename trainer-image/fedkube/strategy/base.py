"""The strategy seam: a server half and a site half per algorithm, in the algorithm's file.

Sites send updates (their trained weights minus the global weights they started from). The
aggregator folds them into a running weighted mean (``fedkube.accumulate``); the strategy's
server half then turns that mean into the next global model and may keep state across
rounds (moments, control variates), which travels through checkpoints as arrays plus JSON.
Its site half (``SiteHalf``) changes how a site trains (a proximal term, a gradient
correction) and may add tensors to its update; a site builds it from its own copy of the job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fedkube.wire.tensors import Params, TensorInfo


@dataclass(frozen=True)
class LocalAdjustments:
    """What a strategy changes in a site's local training for one round."""

    # FedProx: mu/2 ||w - w_global||^2 is added to the loss (0: none).
    proximal_mu: float = 0.0
    # SCAFFOLD: added to each parameter's gradient (c - c_i), by parameter name.
    grad_correction: Params = field(default_factory=dict)


class SiteHalf:
    """A strategy's part at a site. The default trains plainly and adds nothing."""

    def adjustments(self, round: int, sent: Params) -> LocalAdjustments:
        """How to train this round; ``sent`` is what the strategy sent with the model."""
        return LocalAdjustments()

    def update_extras(self, round: int, update: Params, step_size: float, sent: Params) -> Params:
        """Tensors the update carries besides the model delta; ``step_size`` is the local
        steps times the learning rate."""
        return {}


class Strategy(ABC):
    name: ClassVar[str]

    def client_config(self, round: int) -> dict[str, float]:
        """Settings sent with each task (a custom training function sees them)."""
        return {}

    def site_half(self) -> SiteHalf:
        return SiteHalf()

    def broadcast_arrays(self) -> Params:
        """Tensors sent to the sites with the model (SCAFFOLD's server control variate)."""
        return {}

    def update_extras(self, model: Sequence[TensorInfo]) -> list[TensorInfo]:
        """Tensors a site's update carries besides the model delta."""
        return []

    @abstractmethod
    def apply(self, params: Params, mean_update: Params, round: int, participants: int) -> Params:
        """The next global model from the current one and the round's mean update (model
        deltas and extras, weighted by samples) over ``participants`` sites.

        ``params`` must not be changed: a site may be downloading it. ``mean_update`` is the
        strategy's to reuse, so the new model can be built in its buffers.
        """

    def state_arrays(self) -> Params:
        return {}

    def state_meta(self) -> dict[str, Any]:
        return {}

    def load_state(self, arrays: Params, meta: dict[str, Any]) -> None:
        """Restore what ``state_arrays``/``state_meta`` saved (aggregator restart)."""
