"""A user's own model and training loop, brought to fedkube through import paths.

The manifest names `hospital_models:make_model` (spec.task.model.importPath) and, optionally,
`hospital_models:train` (spec.task.trainFunction). The module must be importable by every
trainer and by the aggregator: install it in the trainer image, or put its folder on
PYTHONPATH (as `fedkube run` users do: `PYTHONPATH=examples/custom-model fedkube run ...`).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualMLP(nn.Module):
    def __init__(self, num_features: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(num_features, width)
        self.block = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.block(h))


def make_model(num_features: int, num_classes: int, width: int = 32) -> nn.Module:
    """Called as make_model(num_features=..., num_classes=..., **spec.task.model.params)."""
    return ResidualMLP(num_features, num_classes, width)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config) -> dict[str, float]:
    """Full-batch Adam with label smoothing; returns the metrics to report."""
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    for _ in range(config.local_epochs):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return {"train_loss": float(loss.detach())}
