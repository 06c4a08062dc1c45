"""An imaging-size model for the benchmarks: ResNet-18 (He et al. 2016) in its CIFAR form
(a 3x3 stem, no max-pool), about 11.2 M parameters at width 64, on images that travel as
flattened rows (channels x height x width, as `bench/imaging_data.py` writes them).

A job names it by import path, as a user's own model: ``imaging_models:resnet18`` with
``PYTHONPATH`` holding `bench/` and the site allowing the path (``--allow-import``).
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.skip(x)).relu()


class ResNet18(nn.Module):
    def __init__(self, channels: int, side: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.shape = (channels, side, side)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(len(x), *self.shape)
        x = self.layers(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def resnet18(num_features: int, num_classes: int, channels: int = 3, width: int = 64) -> nn.Module:
    """ResNet-18 for square images of ``channels`` channels, flattened to ``num_features``."""
    side = math.isqrt(num_features // channels)
    if channels * side * side != num_features:
        raise ValueError(f"{num_features} features are not {channels} square channels")
    return ResNet18(channels, side, num_classes, width)
