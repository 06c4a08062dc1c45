"""What a site released in its latest secure round, kept in its state folder until the next
round's replaces it.

An aggregator that stopped after some sites revealed their shares of a round, but before it
saved the round, runs that round again when it comes back. A site that trained afresh for it
would give a second sum over the same model: with other survivors, the difference of the two
sums is one site's update; with fresh noise, two draws of it. So the site sends the same
release again, masked with the new attempt's keys (``SecureStages``): the update as clipped
and noised the first time, its counts, the model it was trained on. Kept before the masked
update leaves the site, so that a trainer that restarts knows what it sent.

The file is safetensors (numbers and a JSON header, nothing unpickled) written whole and
renamed into place."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedkube.storage.safetensors_file import (
    read_safetensors,
    read_safetensors_metadata,
    write_safetensors,
)

log = logging.getLogger("fedkube.trainer")

CONTRIBUTION_FILE = "secure-contribution.safetensors"


@dataclass(frozen=True)
class Label:
    """Which round a kept release answers, and the model it was made on."""

    round: int
    scores_only: bool
    # sha256 of the model the site trained or scored (empty for round 0: its statistics).
    model: bytes

    def answers(self, round: int, scores_only: bool) -> bool:
        return (self.round, self.scores_only) == (round, scores_only)


@dataclass
class Contribution:
    """One secure round's release by this site, before masking."""

    label: Label
    version: int
    # The update's tensors as ``SiteSession.protect`` released them, by name, in order.
    released: dict[str, np.ndarray]
    # uint32 values that must add up exactly (round 0's counts, the evaluation's), masked
    # as they are.
    counts: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)


class ContributionStore:
    """The latest contribution, in ``folder``. Only its label stays in memory (an update can
    be GBs); the release is read back when a round is run again. Without a folder it is held
    in memory: a site without a state folder forgets its guards on restart too."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / CONTRIBUTION_FILE if folder is not None else None
        self._label: Label | None = None
        self._held: Contribution | None = None
        self._looked = self.path is None

    def label(self) -> Label | None:
        if not self._looked:
            self._looked = True
            self._label = self._read_label()
        return self._label

    def load(self) -> Contribution | None:
        """The kept release whole; None when it cannot be read (said in the log)."""
        if self.path is None:
            return self._held
        try:
            arrays, meta = read_safetensors(self.path)
            return Contribution(
                label=_label_of(meta),
                version=int(meta["version"]),
                released={k: arrays[f"released/{k}"] for k in json.loads(meta["released"])},
                counts={k: arrays[f"counts/{k}"] for k in json.loads(meta["counts"])},
                metrics={str(k): float(v) for k, v in json.loads(meta["metrics"]).items()},
            )
        except Exception as e:  # a damaged file fails in the library, JSON or a key
            self._unreadable(e)
            return None

    def keep(self, contribution: Contribution) -> None:
        self._label, self._looked = contribution.label, True
        if self.path is None:
            self._held = contribution
            return
        # Names are prefixed so that an update tensor and a count may share a name.
        arrays = {
            **{f"released/{k}": v for k, v in contribution.released.items()},
            **{f"counts/{k}": np.asarray(v, np.uint32) for k, v in contribution.counts.items()},
        }
        label = contribution.label
        metadata = {
            "round": str(label.round),
            "scoresOnly": json.dumps(label.scores_only),
            "model": label.model.hex(),
            "version": str(contribution.version),
            "released": json.dumps(list(contribution.released)),
            "counts": json.dumps(list(contribution.counts)),
            "metrics": json.dumps(contribution.metrics),
        }
        write_safetensors(self.path, arrays, metadata)

    def _read_label(self) -> Label | None:
        assert self.path is not None
        if not self.path.exists():
            return None
        try:
            return _label_of(read_safetensors_metadata(self.path))
        except Exception as e:  # a damaged file fails in the library, JSON or a key
            self._unreadable(e)
            return None

    def _unreadable(self, e: Exception) -> None:
        # Safe either way: without it, the site declines a round it revealed.
        log.warning(
            "%s cannot be read (%s: %s); a round this site revealed will not be answered again",
            *(self.path, type(e).__name__, e),
        )


def _label_of(meta: dict[str, str]) -> Label:
    return Label(
        round=int(meta["round"]),
        scores_only=bool(json.loads(meta["scoresOnly"])),
        model=bytes.fromhex(meta["model"]),
    )
