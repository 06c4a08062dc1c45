"""Three hospitals' own files, made from scikit-learn's breast-cancer data as a consortium
would bring them: label skew (one site mostly malignant, one mostly benign), features on
scales three orders and more apart (areas in the thousands, smoothness below 0.2), text
labels, one site in Parquet. Used by the site-data tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

LABEL = "diagnosis"
SITES = ("clinic-a", "clinic-b", "clinic-c")
# Of each class, the share each site holds: clinic-a mostly malignant, clinic-b mostly benign.
SHARES = {"malignant": (0.7, 0.1, 0.2), "benign": (0.1, 0.6, 0.3)}
SUFFIX = {"clinic-a": ".csv", "clinic-b": ".parquet", "clinic-c": ".csv"}


def breast_cancer_frame() -> pd.DataFrame:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame[LABEL] = [str(bunch.target_names[t]) for t in bunch.target]
    return frame


def split_by_site(frame: pd.DataFrame, seed: int = 5) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[pd.DataFrame]] = {s: [] for s in SITES}
    for label, shares in SHARES.items():
        rows = frame[frame[LABEL] == label].sample(frac=1.0, random_state=int(rng.integers(1e6)))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).round().astype(int)
        bounds = [0, *cuts.tolist(), len(rows)]
        for k, site in enumerate(SITES):
            parts[site].append(rows.iloc[bounds[k] : bounds[k + 1]])
    return {s: pd.concat(p).sample(frac=1.0, random_state=seed) for s, p in parts.items()}


def write_site_files(
    folder: Path, frames: dict[str, pd.DataFrame] | None = None
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = frames or split_by_site(breast_cancer_frame())
    paths = {}
    for site, frame in frames.items():
        path = folder / f"{site}{SUFFIX[site]}"
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        paths[site] = path
    return paths


def file_job(
    paths: dict[str, Path],
    *,
    name: str = "clinics",
    standardize: str = "federated",
    missing: str = "refuse",
    rounds: int = 30,
    **spec: Any,
) -> dict[str, Any]:
    """A job over the sites' files: logistic regression, 30 features, text labels."""
    return {
        "apiVersion": "fedkube.io/v1alpha1",
        "kind": "FederatedJob",
        "metadata": {"name": name},
        "spec": {
            "rounds": rounds,
            "minSitesPerRound": len(paths),
            "roundTimeoutSeconds": 60,
            "joinGraceSeconds": 20,
            "task": {
                "model": {"name": "logistic_regression"},
                "batchSize": 16,
                "learningRate": 0.05,
                "seed": 2,
                "numFeatures": 30,
                "numClasses": 2,
            },
            "sites": [
                {
                    "name": site,
                    "data": {
                        "file": {"path": str(path), "labelColumn": LABEL},
                        "standardize": standardize,
                        "missing": missing,
                    },
                }
                for site, path in paths.items()
            ],
            **spec,
        },
    }
