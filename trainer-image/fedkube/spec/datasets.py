"""The scikit-learn datasets fedkube can split into simulated sites. No sklearn import here,
so the spec can ask for shapes cheaply."""

from __future__ import annotations

# dataset -> (number of features, number of classes)
DATASET_SHAPES: dict[str, tuple[int, int]] = {
    "breast_cancer": (30, 2),
    "digits": (64, 10),
    "wine": (13, 3),
    "iris": (4, 3),
}
