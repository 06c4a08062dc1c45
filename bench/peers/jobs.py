"""The three jobs every system runs, and their data on disk (run in fedkube's environment).

For each job a folder holds fedkube's manifest (``job.yaml``), the peers' settings
(``job.json``), and each site's rows as ``site-<i>.npz``: the very arrays fedkube's trainer
trains on and holds out (its loader's split and scaling, read back through
``fedkube.data.load_site_data``), so the peers train on the same rows. ``test.npz`` is the
union of the sites' held-out rows, on which run.py scores every system's final model.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: imaging_data

SITES = 5


@dataclass(frozen=True)
class Job:
    name: str
    title: str
    rounds: int
    model: str  # a function of peer_models
    params: dict[str, Any]
    batch_size: int
    learning_rate: float
    momentum: float = 0.0
    local_epochs: int = 1
    seed: int = 1
    rows_per_site: int = 0  # 0: the dataset's own (breast cancer)
    # For the jobs whose sites read their own files (a manifest must say so then).
    shape: dict[str, int] = field(default_factory=dict)


JOBS = {
    "breast-cancer": Job(
        "breast-cancer", "breast-cancer MLP (2 K parameters), 5 sites, 20 rounds", 20, "mlp",
        {"width": 64}, batch_size=16, learning_rate=0.05,
    ),
    "mlp-10m": Job(
        "mlp-10m", "10 M-parameter MLP, 5 sites, 3 rounds", 3, "mlp", {"width": 3100, "depth": 2},
        batch_size=64, learning_rate=0.01, rows_per_site=400,
        shape={"numFeatures": 100, "numClasses": 10},
    ),
    "imaging": Job(
        "imaging", "ResNet-18 (11.2 M parameters) on 32x32 images, 5 sites, 3 rounds", 3,
        "resnet18", {"channels": 3, "width": 64}, batch_size=32, learning_rate=0.05,
        momentum=0.9, rows_per_site=128, shape={"numFeatures": 3 * 32 * 32, "numClasses": 10},
    ),
}  # fmt: skip


def _synthetic_rows(folder: Path, job: Job) -> list[dict[str, Any]]:
    """10 classes of Gaussian clusters in 100 features, one Parquet file per site."""
    import pandas as pd

    rng = np.random.default_rng(11)
    centres = rng.normal(0, 1, (10, 100))
    sources = []
    for i in range(SITES):
        y = rng.integers(0, 10, job.rows_per_site)
        x = centres[y] + rng.normal(0, 1.5, (job.rows_per_site, 100))
        frame = pd.DataFrame(x.astype(np.float32), columns=[f"f{j}" for j in range(100)])
        frame["y"] = y
        path = folder / f"site-{i}.parquet"
        frame.to_parquet(path, index=False)
        sources.append({"file": {"path": path.name, "labelColumn": "y"}, "standardize": "none"})
    return sources


def _sources(folder: Path, job: Job) -> list[dict[str, Any]]:
    if job.name == "breast-cancer":  # the example's own split: Dirichlet(0.5) label skew
        return [
            {
                "sklearn": {
                    "dataset": "breast_cancer", "numPartitions": SITES, "partition": i,
                    "partitioner": "dirichlet", "alpha": 0.5, "seed": 7,
                },
                "standardize": "dataset",
            }
            for i in range(SITES)
        ]  # fmt: skip
    if job.name == "mlp-10m":
        return _synthetic_rows(folder, job)
    from imaging_data import write_site_files

    files = write_site_files(folder, SITES, job.rows_per_site, side=32)
    return [{"file": {"path": p.name, "labelColumn": "y"}, "standardize": "none"} for p in files]


def manifest(job: Job, sources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "fedkube.io/v1alpha1",
        "kind": "FederatedJob",
        "metadata": {"name": job.name},
        "spec": {
            "rounds": job.rounds,
            "minSitesPerRound": SITES,
            "roundTimeoutSeconds": 3600,
            "joinGraceSeconds": 600,
            "task": {
                "model": {"importPath": f"peer_models:{job.model}", "params": job.params},
                "localEpochs": job.local_epochs,
                "batchSize": job.batch_size,
                "learningRate": job.learning_rate,
                "momentum": job.momentum,
                "optimizer": "sgd",
                "seed": job.seed,
                **job.shape,
            },
            "strategy": {"name": "fedavg"},
            # fedkube scores the global model at every site every round by default; the peers
            # run no federated evaluation here, so fedkube scores only the last round's.
            "evaluation": {"everyRounds": job.rounds},
            "sites": [{"name": f"site-{i}", "data": s} for i, s in enumerate(sources)],
        },
    }


def prepare(job: Job, folder: Path) -> Path:
    """Writes the job's folder (see the module's words) and returns it."""
    from fedkube.data import load_site_data
    from fedkube.spec import load_job

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(manifest(job, _sources(folder, job)), sort_keys=False))
    spec = load_job(path).spec
    tests_x, tests_y = [], []
    for i in range(SITES):
        data = load_site_data(spec, f"site-{i}", path)
        np.savez(folder / f"site-{i}.npz", x_train=data.x_train, y_train=data.y_train)
        tests_x.append(data.x_test)
        tests_y.append(data.y_test)
        features, classes = data.num_features, data.num_classes
    np.savez(folder / "test.npz", x=np.concatenate(tests_x), y=np.concatenate(tests_y))
    settings = {
        "name": job.name, "rounds": job.rounds, "sites": SITES, "model": job.model,
        "params": job.params, "numFeatures": features, "numClasses": classes,
        "batchSize": job.batch_size, "learningRate": job.learning_rate,
        "momentum": job.momentum, "localEpochs": job.local_epochs, "seed": job.seed,
    }  # fmt: skip
    (folder / "job.json").write_text(json.dumps(settings, indent=1))
    return folder
