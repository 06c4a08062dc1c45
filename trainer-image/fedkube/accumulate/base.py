"""The accumulator seam: how a round's updates become one mean update, folded as they arrive
(the mean) or kept aside until the round closes (robust combinations). One file each."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from fedkube.wire.tensors import Params, TensorInfo


class UpdateSource(Protocol):
    """One whole, checked update: its tensors' values in order, readable by element range."""

    weight: float

    def pieces(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(tensor index, first element, values) covering every tensor in order."""
        ...

    def read(self, tensor: int, start: int, count: int) -> np.ndarray: ...

    def close(self) -> None: ...


@runtime_checkable
class SplitSource(UpdateSource, Protocol):
    """An update whose pieces can also be read in runs, each on a thread of its own."""

    def runs(self, count: int) -> list[Iterator[tuple[int, int, np.ndarray]]]:
        """Up to ``count`` runs covering every piece once, in order within each run; a
        piece's values are good until its run yields the next."""
        ...


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
