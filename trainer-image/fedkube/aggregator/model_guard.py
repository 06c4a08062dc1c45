"""The last guard before a new global model is published: every value finite. Each update
was checked before it was folded, but sums and a server optimiser's steps can still
overflow float32; a round whose model (or the strategy's state) would not be finite is not
published, the strategy's state goes back to what it was, and the round is tried again."""

from __future__ import annotations

import numpy as np

from fedkube.strategy.base import Strategy
from fedkube.wire.tensors import Params


def non_finite(params: Params) -> str | None:
    """The first tensor holding NaN or Inf, and where; None when all is finite."""
    for name, values in params.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(values).reshape(-1)))
        if bad.size:
            return f"tensor {name!r} is not finite at element {int(bad[0])}"
    return None


def apply_checked(
    strategy: Strategy, params: Params, mean: Params, round: int, participants: int
) -> tuple[Params | None, str]:
    """(the next global model, "") or (None, why) when it would not be finite; the
    strategy's state is then as it was before."""
    problem = non_finite(mean)
    if problem is not None:
        return None, f"the round's mean update: {problem}"
    # A server optimiser's moments change in place: kept to put back (copies; a stateless
    # strategy has none).
    saved = {k: np.array(v, copy=True) for k, v in strategy.state_arrays().items()}
    meta = strategy.state_meta()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is what is checked next
        new = strategy.apply(params, mean, round, participants=participants)
    problem = non_finite(new)
    where = "the new global model"
    if problem is None:
        # An optimiser state gone to Inf (a squared update overflowing) would stall every
        # later round: as unfit as the model itself.
        problem, where = non_finite(strategy.state_arrays()), f"the {strategy.name} state"
    if problem is None:
        return new, ""
    strategy.load_state(saved, meta)
    return None, f"{where}: {problem}"
