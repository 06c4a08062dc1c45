"""The benchmark's three models in plain torch, imported by import path by fedkube
(``peer_models:mlp``) and by the Flower and FLARE apps alike, so every system trains the same
network. Nothing here imports fedkube: the peers run it in their own virtual environments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the imaging ResNet

import itertools

from imaging_models import resnet18


class MLP(nn.Module):
    """Fully connected layers with ReLU between them: the breast-cancer model (30 -> 64 -> 2,
    about 2 K parameters) and, wide, the 10-million-parameter one."""

    def __init__(self, num_features: int, num_classes: int, hidden: list[int]) -> None:
        super().__init__()
        widths = [num_features, *hidden, num_classes]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


__all__ = ["build", "mlp", "parameter_count", "resnet18"]


def mlp(num_features: int, num_classes: int, width: int = 64, depth: int = 1) -> nn.Module:
    """``depth`` hidden layers of ``width`` units (a manifest's model parameters are scalars)."""
    return MLP(num_features, num_classes, [width] * depth)


def build(name: str, num_features: int, num_classes: int, params: dict) -> nn.Module:
    """The peers' way in: the model by its name here and the job's parameters."""
    return {"mlp": mlp, "resnet18": resnet18}[name](num_features, num_classes, **params)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def class_spec(name: str, num_features: int, num_classes: int, params: dict) -> tuple[str, dict]:
    """The model as a class path and its arguments, as FLARE's recipes name a model."""
    if name == "mlp":
        hidden = [params.get("width", 64)] * params.get("depth", 1)
        args = {"num_features": num_features, "num_classes": num_classes, "hidden": hidden}
        return "peer_models.MLP", args
    side = round((num_features / params["channels"]) ** 0.5)
    args = {"channels": params["channels"], "side": side, "num_classes": num_classes,
            "width": params["width"]}  # fmt: skip
    return "imaging_models.ResNet18", args
