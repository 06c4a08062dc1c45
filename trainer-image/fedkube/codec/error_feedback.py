"""A site's side of a lossy uplink: what the codec left out is added to the next update
(error feedback, Seide et al. 2014; Karimireddy et al. 2019), so nothing is lost, only late.
The residual is the site's own state: kept in its state folder (safetensors), it survives a
restart of the trainer; the aggregator never holds it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedkube.codec.base import Codec
from fedkube.storage.safetensors_file import read_safetensors, write_safetensors
from fedkube.wire.tensors import Params

log = logging.getLogger("fedkube.trainer")

RESIDUAL_FILE = "uplink-residual.safetensors"


class UplinkEncoder:
    def __init__(self, codec: Codec, state_dir: Path | None = None, key: str = "") -> None:
        self.codec = codec
        self.path = state_dir / RESIDUAL_FILE if state_dir else None
        self.key = key  # the job's training fingerprint: a residual of another job is not ours
        self.residual: Params = {}
        self.round = 0  # the round whose update the residual follows
        self._pending: Params | None = None
        if self.path is not None and self.path.exists():
            arrays, meta = read_safetensors(self.path)
            if meta.get("key") == key:
                self.residual, self.round = arrays, int(meta.get("round", "0"))
                log.info("uplink residual of round %d restored from %s", self.round, self.path)

    def encode(self, update: Params) -> Params:
        """The wire tensors for ``update`` plus what earlier rounds left out. The new
        residual takes effect once ``sent`` says the update went."""
        corrected = {
            n: (v + self.residual[n]).astype(np.float32) if n in self.residual else v
            for n, v in update.items()
        }
        wire, seen = self.codec.encode(corrected)
        if self.codec.feedback:
            self._pending = {n: (corrected[n] - seen[n]).astype(np.float32) for n in corrected}
        return wire

    def sent(self, round: int) -> None:
        """The update of ``round`` reached the aggregator: its residual is the one to keep."""
        if self._pending is None:
            return
        self.residual, self._pending, self.round = self._pending, None, round
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_safetensors(self.path, self.residual, {"key": self.key, "round": str(round)})
