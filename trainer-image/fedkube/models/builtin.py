"""The built-in models: logistic regression, an MLP, and a small CNN for 8x8 images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fedkube.errors import ModelError


def logistic_regression(num_features: int, num_classes: int) -> nn.Module:
    # Multinomial logistic regression: one linear layer read through softmax cross-entropy.
    return nn.Linear(num_features, num_classes)


def mlp(num_features: int, num_classes: int, hidden_sizes: Sequence[int] = (32,)) -> nn.Module:
    layers: list[nn.Module] = []
    width = num_features
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with pooling, for square single-channel images (8x8 digits)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        side = math.isqrt(num_features)
        if side * side != num_features or side < 4:
            raise ModelError(
                f"spec.task.model.name: cnn needs square images of at least 4x4, but there are "
                f"{num_features} features; use mlp or logistic_regression"
            )
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        pooled = side // 4
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * pooled * pooled, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x.view(-1, 1, self.side, self.side)))
        return out
