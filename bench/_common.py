"""What the benchmarks share: the centralised baseline, reading a process's memory, and the
import path of the project's own package when run from a clone without an install."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Centralised:
    accuracy: float
    loss: float
    wall_seconds: float


def centralised(doc_or_manifest: dict | Path, seed: int | None = None) -> Centralised:
    """The same model trained on the union of every site's training rows, for as many epochs
    as the federated job runs in all (rounds x local epochs), scored on the union of the
    held-out rows: what pooling the data would reach."""
    import torch
    from fedkube.data import load_site_data
    from fedkube.models.registry import build_model
    from fedkube.spec import load_job, parse_job
    from fedkube.trainer.local import TrainConfig, default_train

    manifest = doc_or_manifest if isinstance(doc_or_manifest, Path) else None
    job = load_job(manifest) if manifest else parse_job(doc_or_manifest)  # type: ignore[arg-type]
    spec, t = job.spec, job.spec.task
    sites = [load_site_data(spec, s.name, manifest) for s in spec.sites if not s.remote]
    x = torch.from_numpy(np.concatenate([d.x_train for d in sites]))
    y = torch.from_numpy(np.concatenate([d.y_train for d in sites]))
    xt = torch.from_numpy(np.concatenate([d.x_test for d in sites]))
    yt = torch.from_numpy(np.concatenate([d.y_test for d in sites]))
    model = build_model(t, sites[0].num_features, sites[0].num_classes)
    config = TrainConfig(
        round=0,
        local_epochs=spec.rounds * t.local_epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        optimizer=t.optimizer,
        momentum=t.momentum,
        seed=t.seed if seed is None else seed,
    )
    started = time.perf_counter()
    default_train(model, x, y, config)
    wall = time.perf_counter() - started
    with torch.no_grad():
        logits = model(xt)
        loss = float(torch.nn.functional.cross_entropy(logits, yt))
        acc = float((logits.argmax(1) == yt).float().mean())
    return Centralised(acc, loss, wall)


def status_kib(pid: int, key: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)
