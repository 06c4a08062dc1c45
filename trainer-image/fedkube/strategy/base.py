"""The strategy seam: how the mean of the sites' updates becomes the next global model.

Sites send updates (their trained weights minus the global weights they started from). The
aggregator folds them into a running weighted mean (``WeightedMean``); the strategy then
turns that mean into the next global model and may keep state across rounds (moments,
control variates), which travels through checkpoints as arrays plus JSON.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from fedkube.wire.tensors import Params, TensorInfo


class Strategy(ABC):
    name: ClassVar[str]

    def client_config(self, round: int) -> dict[str, float]:
        """Settings each site applies to its local training this round."""
        return {}

    def new_accumulator(self, infos: Sequence[TensorInfo]) -> Accumulator:
        return WeightedMean(infos)

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


class UpdateSource(Protocol):
    """One whole, checked update: its tensors' values in order, readable by element range."""

    weight: float

    def pieces(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(tensor index, first element, values) covering every tensor in order."""
        ...

    def read(self, tensor: int, start: int, count: int) -> np.ndarray: ...

    def close(self) -> None: ...


class ArrayUpdate:
    """An update held as arrays (the in-process simulation's)."""

    def __init__(self, infos: Sequence[TensorInfo], arrays: Params, weight: float) -> None:
        self.flat = [np.ascontiguousarray(arrays[i.name]).reshape(-1) for i in infos]
        self.weight = weight

    def pieces(self) -> Iterator[tuple[int, int, np.ndarray]]:
        for t, values in enumerate(self.flat):
            yield t, 0, values

    def read(self, tensor: int, start: int, count: int) -> np.ndarray:
        return self.flat[tensor][start : start + count]

    def close(self) -> None:
        self.flat = []


class Accumulator(ABC):
    """Turns a round's updates into one mean update. ``add`` takes ownership of the update."""

    count: int = 0

    @abstractmethod
    def add(self, update: UpdateSource) -> None: ...

    @abstractmethod
    def mean(self) -> Params: ...

    def discard(self) -> None:
        """The round was abandoned: let go of whatever is held."""


class WeightedMean(Accumulator):
    """Running sum of weighted updates, folded chunk by chunk: about one model's size of
    memory, whatever the number of sites.

    The sums are float64: a float32 value times a sample count is exact in float64, and the
    sums of a round's few such products round there, far below float32's precision. So the
    float32 mean does not depend on the order the updates arrived in (which no transport
    fixes), and a job gives the same model over gRPC and in process."""

    def __init__(self, infos: Sequence[TensorInfo]) -> None:
        self.infos = list(infos)
        # Allocated on first use, so an idle aggregator holds only the global model.
        self._sums: list[np.ndarray] | None = None
        self.total_weight = 0.0
        self.count = 0

    def _buffers(self) -> list[np.ndarray]:
        if self._sums is None:
            self._sums = [np.zeros(i.size, dtype=np.float64) for i in self.infos]
        return self._sums

    def add(self, update: UpdateSource) -> None:
        try:
            for tensor, start, values in update.pieces():
                self.fold(tensor, start, values, update.weight)
            self.commit(update.weight)
        finally:
            update.close()

    def fold(self, tensor: int, start: int, values: np.ndarray, weight: float) -> None:
        target = self._buffers()[tensor][start : start + values.size]
        # values * weight makes one chunk-sized temporary, never a model-sized one.
        target += values.astype(np.float64) * weight

    def commit(self, weight: float) -> None:
        """One update has been folded whole."""
        self.total_weight += weight
        self.count += 1

    def mean(self) -> Params:
        if self.count == 0 or self.total_weight <= 0:
            raise ValueError("no update to average")
        sums = self._buffers()
        out: Params = {}
        for info, s in zip(self.infos, sums, strict=True):
            s /= self.total_weight
            out[info.name] = s.astype(info.dtype).reshape(info.shape)
        self._sums = None
        return out
