"""Local training and evaluation at one site (torch). The only place where training happens."""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fedkube.data.site_data import SiteData
from fedkube.errors import ModelError
from fedkube.models.registry import build_model, import_object, load_params, model_params
from fedkube.spec.job import TaskSpec
from fedkube.wire.tensors import Params


@dataclass(frozen=True)
class TrainConfig:
    """What a custom ``task.trainFunction`` receives besides the model and the data."""

    round: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    momentum: float
    seed: int
    strategy: dict[str, float] = field(default_factory=dict)


TrainFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor, TrainConfig], dict[str, float]]


def default_train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig
) -> dict[str, float]:
    """Mini-batch SGD or Adam over the site's training split, reshuffled every epoch."""
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    total_loss, total_correct, seen = 0.0, 0, 0
    for _ in range(config.local_epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), config.batch_size):
            idx = order[start : start + config.batch_size]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(idx)
            total_correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
    return {"train_loss": total_loss / seen, "train_accuracy": total_correct / seen}


class LocalTrainer:
    """Holds the site's model and data; turns a global model into an update."""

    def __init__(self, task: TaskSpec, data: SiteData, site: str) -> None:
        self.task = task
        self.site = site
        self.data = data
        self.model = build_model(task, data.num_features, data.num_classes)
        self.x_train = torch.from_numpy(data.x_train)
        self.y_train = torch.from_numpy(data.y_train)
        self.x_test = torch.from_numpy(data.x_test)
        self.y_test = torch.from_numpy(data.y_test)
        self.train_fn: TrainFunction = default_train
        if task.train_function:
            fn = import_object(task.train_function, "spec.task.trainFunction")
            if not callable(fn):
                raise ModelError(f"spec.task.trainFunction: {task.train_function} is not callable")
            self.train_fn = fn
        self._site_seed = zlib.crc32(site.encode())

    def warm_up(self) -> None:
        """One step on a throw-away copy: torch's first call is slow, and it should not be
        paid inside round one while every site waits."""
        model = copy.deepcopy(self.model)
        n = min(len(self.y_train), self.task.batch_size)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        nn.functional.cross_entropy(model(self.x_train[:n]), self.y_train[:n]).backward()  # type: ignore[no-untyped-call]
        opt.step()
        with torch.no_grad():
            model.eval()
            model(self.x_test)

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    def set_global(self, params: Params) -> None:
        load_params(self.model, params)

    def train(
        self, global_params: Params, round: int, strategy: dict[str, float]
    ) -> tuple[Params, dict[str, float]]:
        """Train from ``global_params``; returns (update = trained - global, metrics)."""
        self.set_global(global_params)
        config = TrainConfig(
            round=round,
            local_epochs=self.task.local_epochs,
            batch_size=self.task.batch_size,
            learning_rate=self.task.learning_rate,
            optimizer=self.task.optimizer,
            momentum=self.task.momentum,
            seed=(self.task.seed * 1_000_003 + self._site_seed + round) % 2**63,
            strategy=dict(strategy),
        )
        started = time.perf_counter()
        metrics: dict[str, Any] = self.train_fn(self.model, self.x_train, self.y_train, config)
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        metrics["train_seconds"] = time.perf_counter() - started
        trained = model_params(self.model)
        update = {name: trained[name] - global_params[name] for name in global_params}
        return update, metrics

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        """Loss and accuracy of ``params`` on the site's held-out split."""
        self.set_global(params)
        self.model.eval()
        logits = self.model(self.x_test)
        loss = nn.functional.cross_entropy(logits, self.y_test)
        accuracy = float((logits.argmax(1) == self.y_test).float().mean())
        return {"loss": float(loss), "accuracy": accuracy}

    def held_out_size(self) -> int:
        return len(self.y_test)
