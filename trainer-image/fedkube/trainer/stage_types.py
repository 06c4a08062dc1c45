"""What a site's stages hand each other: its rows before preprocessing, and what one
training task gave. A leaf, so the client and its secure stages both name them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.preprocessing import Preprocessing
from fedkube.trainer.local import LocalTrainer
from fedkube.wire.tensors import Params


@dataclass(frozen=True)
class Trained:
    """A training task's outcome: the update, its figures, and (under secure aggregation,
    when the task scored the model first) the evaluation counts to mask with it."""

    version: int
    update: Params
    metrics: dict[str, float]
    counts: np.ndarray | None = None


class SiteSource(Protocol):
    """A site's rows before the agreed preprocessing: they answer round 0, then make the
    trainer once the preprocessing is known (``fedkube.trainer.site.PendingSite``)."""

    @property
    def rows(self) -> int: ...

    def schema(self, secure: bool) -> pb.SiteSchema: ...

    def statistics(self, secure: bool) -> Params: ...

    def trainer(self, preprocessing: Preprocessing | None) -> LocalTrainer: ...
