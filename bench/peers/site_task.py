"""What one site does in the Flower and FLARE apps, the same in both and the same as fedkube's
built-in loop: mini-batch SGD over the site's training rows, reshuffled every epoch, a fresh
optimiser each round, cross-entropy loss.

Every training call appends one line to ``$PEERS_EVENTS`` (JSON: system, site, round, start,
end, wall-clock seconds), from which run.py reads the time to the first round and what each
round cost beyond its slowest site's training. The job's settings are ``job.json`` in
``$PEERS_JOB_DIR``, the site's rows ``site-<i>.npz`` beside it (written by jobs.py from
fedkube's own split of the same data). Imports no fedkube.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import peer_models
import torch
from torch import nn


def job_dir() -> Path:
    return Path(os.environ["PEERS_JOB_DIR"])


def load_job() -> dict[str, Any]:
    return json.loads((job_dir() / "job.json").read_text())


def build_model(job: dict[str, Any]) -> nn.Module:
    torch.manual_seed(job["seed"])
    return peer_models.build(job["model"], job["numFeatures"], job["numClasses"], job["params"])


def site_rows(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(job_dir() / f"site-{index}.npz") as data:
        return torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])


class Site:
    """One site's data, and its training for a round."""

    def __init__(self, system: str, index: int) -> None:
        torch.set_num_threads(1)
        self.system, self.index = system, index
        self.job = load_job()
        self.x, self.y = site_rows(index)

    def train(self, model: nn.Module, round_number: int) -> dict[str, float]:
        """``round_number`` from 1, as the server numbers it (a simulation may host one site
        in several worker processes, so a count kept here would not do)."""
        job = self.job
        started = time.time()
        opt = torch.optim.SGD(model.parameters(), lr=job["learningRate"], momentum=job["momentum"])
        loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(job["seed"] + 1000 * self.index + round_number)
        model.train()
        total, seen = 0.0, 0
        for _ in range(job["localEpochs"]):
            order = torch.randperm(len(self.y), generator=gen)
            for start in range(0, len(self.y), job["batchSize"]):
                idx = order[start : start + job["batchSize"]]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(self.x[idx]), self.y[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
        loss = total / max(seen, 1)
        self.record(round_number, started, time.time(), loss)
        return {"train_loss": loss, "num-examples": float(len(self.y))}

    def record(self, round_number: int, start: float, end: float, loss: float) -> None:
        line = {
            "system": self.system,
            "site": self.index,
            "round": round_number,
            "start": start,
            "end": end,
            "loss": loss,
        }
        # One write of one line with O_APPEND: sites in other processes never interleave.
        with open(os.environ["PEERS_EVENTS"], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def save_global(state: dict[str, Any], path: Path) -> None:
    """The global model, as numpy arrays by state-dict name (no pickles), written whole or
    not at all: run.py takes the file's appearance as the run's end."""
    arrays = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
              for k, v in state.items()}  # fmt: skip
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        np.savez(out, **arrays)
    os.replace(partial, path)
