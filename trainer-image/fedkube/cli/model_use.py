"""Using a trained model on new rows: `fedkube predict` and `fedkube evaluate`. The output
folder holds everything needed: the weights (model.safetensors), the task that builds the
model (model-card.json) and the preprocessing (preprocessing.json, its hash in the card);
rows go through the same preprocessing code as the training rows did."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedkube.aggregator.outputs import CARD_FILE, MODEL_FILE, PREPROCESSING_FILE
from fedkube.data.preprocess import prepare, prepare_features
from fedkube.data.table import SiteTable, file_table
from fedkube.errors import DataError, ModelError
from fedkube.spec.preprocessing import Preprocessing
from fedkube.spec.sites import FileSource
from fedkube.spec.task import TaskSpec

NEW_ROWS = "new rows"


@dataclass
class TrainedModel:
    model: Any  # torch.nn.Module
    preprocessing: Preprocessing
    folder: Path

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x.astype(np.float32)))
            return torch.softmax(logits, dim=1).numpy().astype(np.float64)


def load_trained(folder: Path, allow_import: tuple[str, ...] = ()) -> TrainedModel:
    """The model and its preprocessing from a job's output folder. Raises ModelError."""
    from fedkube.models.plugins import PluginPolicy
    from fedkube.models.registry import build_model, load_params
    from fedkube.storage.safetensors_file import read_safetensors

    missing = [f for f in (MODEL_FILE, CARD_FILE, PREPROCESSING_FILE) if not (folder / f).exists()]
    if missing:
        raise ModelError(
            f"{folder} is not a trained job's output folder: {', '.join(missing)} missing "
            "(jobs that ran before preprocessing.json existed must run again)"
        )
    card = json.loads((folder / CARD_FILE).read_text())
    pre = Preprocessing.model_validate_json((folder / PREPROCESSING_FILE).read_text())
    if card.get("preprocessingSha256") != pre.sha256():
        raise ModelError(
            f"{folder / PREPROCESSING_FILE} does not match the hash in {CARD_FILE}; it was "
            "changed after training"
        )
    if not pre.portable:
        raise ModelError(
            "the model was trained with standardize: site (each site scaled by its own "
            "figures), so no one preprocessing fits new rows; train with standardize: "
            "federated to use the model elsewhere"
        )
    task = TaskSpec.model_validate(card["task"])
    features, classes = card["inputShape"]
    # A custom model's code: its module in the model's folder, or what the user allows.
    plugins = PluginPolicy.for_local(task, folder, allow_import)
    model = build_model(task, features, classes, plugins)
    params, _ = read_safetensors(folder / MODEL_FILE)
    load_params(model, params)
    return TrainedModel(model, pre, folder)


def read_rows(path: Path, pre: Preprocessing, label_column: str | None) -> SiteTable:
    label = label_column or pre.label_column or ""
    source = FileSource(path=str(path), label_column=label or "label")
    table = file_table(NEW_ROWS, source, path, pre.features)
    if label not in table.raw.columns:
        table.raw[source.label_column] = ""  # predict needs no label
    return table


def predict(trained: TrainedModel, data: Path, out: Path) -> int:
    """Write one line per input row: predicted label and class probabilities. Rows with an
    empty feature under missing: drop_rows (or refuse) get no prediction. Returns the rows
    predicted."""
    import pandas as pd

    pre = trained.preprocessing
    table = read_rows(data, pre, None)
    x = table.features()
    usable = np.ones(len(x), dtype=bool)
    if pre.missing in ("drop_rows", "refuse"):
        usable = ~np.isnan(x).any(axis=1)
    result = pd.DataFrame(index=range(len(x)))
    result["row"] = np.arange(1, len(x) + 1)
    result["prediction"] = ""
    if usable.any():
        p = trained.probabilities(prepare_features(x, pre, NEW_ROWS, str(data), usable))
        result.loc[usable, "prediction"] = [pre.labels[i] for i in p.argmax(axis=1)]
        for k, label in enumerate(pre.labels):
            result[f"p_{label}"] = np.nan
            result.loc[usable, f"p_{label}"] = p[:, k]
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    return int(usable.sum())


def evaluate(trained: TrainedModel, data: Path, label_column: str | None) -> dict[str, float]:
    """Accuracy and loss on a labelled file, its rows prepared as training prepared them."""
    pre = trained.preprocessing
    table = read_rows(data, pre, label_column)
    if all(t == "" for t in table.labels()):
        raise DataError(
            NEW_ROWS,
            f"the file has no label column {table.label_column!r}; name it with --label-column",
            path=str(data),
        )
    x, y = prepare(table, pre)
    p = trained.probabilities(x)
    loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))
    return {"rows": float(len(y)), "accuracy": float(np.mean(p.argmax(axis=1) == y)), "loss": loss}
