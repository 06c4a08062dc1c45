"""Local training and evaluation at one site (torch). The only place where training happens."""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkube.data.site_data import SiteData
from fedkube.errors import ModelError
from fedkube.models.plugins import NO_PLUGINS, PluginPolicy
from fedkube.models.registry import build_model, import_object, load_params, model_params
from fedkube.privacy.ledger import PrivacyLedger
from fedkube.spec.job_settings import PersonalizationSpec
from fedkube.spec.security import PrivacySpec
from fedkube.spec.task import TaskSpec
from fedkube.stats.score_counts import ScoreLayout, count_block
from fedkube.storage.safetensors_file import write_safetensors
from fedkube.strategy.base import SiteHalf
from fedkube.trainer.device import autocast, resolve_device
from fedkube.trainer.dp_sgd import dp_sgd_train, dp_steps
from fedkube.trainer.optimizers import Sgd, build_optimizer
from fedkube.trainer.scores import roc_auc
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
    # FedProx: mu/2 ||w - w_global||^2 is added to the loss (0: none).
    proximal_mu: float = 0.0
    global_params: dict[str, torch.Tensor] = field(default_factory=dict)
    # SCAFFOLD: added to each parameter's gradient, c - c_i.
    grad_correction: dict[str, torch.Tensor] = field(default_factory=dict)
    # bfloat16 autocast on a GPU (task.mixedPrecision).
    mixed_precision: bool = False


@dataclass(frozen=True)
class Scores:
    """One evaluation at a site: its figures (which stay at the site in a private job) and
    the same as counts that add up across sites."""

    metrics: dict[str, float]
    counts: np.ndarray


# The personal model's file in a site's own folder (its state volume on Kubernetes).
PERSONAL_MODEL_FILE = "personal-model.safetensors"

TrainFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor, TrainConfig], dict[str, float]]


def default_train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig
) -> dict[str, float]:
    """Mini-batch SGD or Adam over the site's training split, reshuffled every epoch."""
    opt = build_optimizer(
        config.optimizer, model.parameters(), config.learning_rate, config.momentum
    )
    loss_fn = nn.CrossEntropyLoss()
    # Batches are drawn on the CPU (the same order on any device), then moved.
    gen = torch.Generator().manual_seed(config.seed)
    named = dict(model.named_parameters())
    prox = [(p, config.global_params[n]) for n, p in named.items()] if config.proximal_mu else []
    correction = [
        (p, config.grad_correction[n]) for n, p in named.items() if n in config.grad_correction
    ]
    model.train()
    total_loss, total_correct, seen, steps = 0.0, 0, 0, 0
    for _ in range(config.local_epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), config.batch_size):
            idx = order[start : start + config.batch_size].to(x.device)
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            with autocast(x.device, config.mixed_precision):
                logits = model(xb)
                loss = loss_fn(logits.float(), yb)
            objective = loss
            if prox:
                objective = loss + config.proximal_mu / 2 * sum(
                    torch.sum((p - g) ** 2) for p, g in prox
                )
            objective.backward()
            for p, c in correction:
                if p.grad is not None:
                    p.grad += c
            opt.step()
            total_loss += float(loss.detach()) * len(idx)
            total_correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            steps += 1
    return {
        "train_loss": total_loss / seen,
        "train_accuracy": total_correct / seen,
        "local_steps": float(steps),
    }


class LocalTrainer:
    """Holds the site's model and data; turns a global model into an update."""

    def __init__(
        self,
        task: TaskSpec,
        data: SiteData,
        site: str,
        personalization: PersonalizationSpec | None = None,
        privacy: PrivacySpec | None = None,
        ledger: PrivacyLedger | None = None,
        strategy: SiteHalf | None = None,
        *,
        plugins: PluginPolicy | None = None,
        personal_dir: Path | None = None,
    ) -> None:
        # Where the personal model is saved after the final evaluation: the site's own
        # folder (never sent anywhere). None: scored and not kept.
        self.personal_dir = personal_dir
        # The import paths this site allows: none but the built-in models unless told.
        plugins = plugins or NO_PLUGINS
        self.task = task
        self.personalization = personalization or PersonalizationSpec()
        self.site = site
        self.data = data
        self.device = resolve_device(task.device)
        self.model = build_model(task, data.num_features, data.num_classes, plugins).to(self.device)
        # The site's data lives on the training device for the whole job: moved once.
        self.x_train = torch.from_numpy(data.x_train).to(self.device)
        self.y_train = torch.from_numpy(data.y_train).to(self.device)
        self.x_test = torch.from_numpy(data.x_test).to(self.device)
        self.y_test = torch.from_numpy(data.y_test).to(self.device)
        self.train_fn: TrainFunction = default_train
        # DP-SGD's loop (one process's, or the site's workers' together).
        self.dp_train_fn: Callable[..., dict[str, Any]] = dp_sgd_train
        if task.train_function:
            fn = import_object(task.train_function, "spec.task.trainFunction", plugins)
            if not callable(fn):
                raise ModelError(f"spec.task.trainFunction: {task.train_function} is not callable")
            self.train_fn = fn
        self._site_seed = zlib.crc32(site.encode())
        initial = model_params(self.model)
        self.param_names = set(initial)
        # What the model weighs on the wire: a model read from the aggregator is checked
        # against it before it is allocated.
        self.model_bytes = sum(v.nbytes for v in initial.values())
        # The strategy's site half, built from this site's own copy of the job.
        self.strategy = strategy or SiteHalf()
        self.dp = privacy.record_level if privacy else None
        if self.dp is not None and ledger is None:
            ledger = PrivacyLedger(self.dp.delta, self.dp.epsilon_cap)
        self.ledger = ledger
        # Ditto's personal model: trained here every round, never sent.
        self.personal = (
            copy.deepcopy(self.model) if self.personalization.method == "ditto" else None
        )

    def warm_up(self) -> None:
        """One step and one scoring on a throw-away copy: torch's first calls are slow, and
        they should not be paid inside round one while every site waits."""
        model = copy.deepcopy(self.model)
        n = min(len(self.y_train), self.task.batch_size)
        opt = Sgd(model.parameters(), lr=0.0)
        nn.functional.cross_entropy(model(self.x_train[:n]), self.y_train[:n]).backward()  # type: ignore[no-untyped-call]
        opt.step()
        self._scores(model)

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    def set_global(self, params: Params) -> None:
        load_params(self.model, params)

    def split(self, tensors: Params) -> tuple[Params, Params]:
        """(the model's tensors, what the strategy sent with them)."""
        model = {k: v for k, v in tensors.items() if k in self.param_names}
        return model, {k: v for k, v in tensors.items() if k not in self.param_names}

    def train(
        self,
        global_params: Params,
        round: int,
        strategy: dict[str, float],
        extras: Params | None = None,
    ) -> tuple[Params, dict[str, float]]:
        """Train from ``global_params``; returns (update, metrics). The update is the trained
        model minus the global one, plus what the strategy asks for (SCAFFOLD's delta c).
        ``strategy`` is the task's strategy settings, passed on to a custom trainFunction."""
        self.set_global(global_params)
        sent = extras or {}
        adjust = self.strategy.adjustments(round, sent)
        config = TrainConfig(
            round=round,
            local_epochs=self.task.local_epochs,
            batch_size=self.task.batch_size,
            learning_rate=self.task.learning_rate,
            optimizer=self.task.optimizer,
            momentum=self.task.momentum,
            seed=(self.task.seed * 1_000_003 + self._site_seed + round) % 2**63,
            strategy=dict(strategy),
            proximal_mu=adjust.proximal_mu,
            global_params={k: self._tensor(v.copy()) for k, v in global_params.items()}
            if adjust.proximal_mu
            else {},
            grad_correction={k: self._tensor(v) for k, v in adjust.grad_correction.items()},
            mixed_precision=self.task.mixed_precision,
        )
        started = time.perf_counter()
        if self.dp is not None and self.ledger is not None:
            q, steps = dp_steps(self.num_train, self.task.batch_size, self.task.local_epochs)
            self.ledger.check(self.dp.noise_multiplier, q, steps)
            metrics: dict[str, Any] = self.dp_train_fn(
                self.model,
                self.x_train,
                self.y_train,
                learning_rate=self.task.learning_rate,
                batch_size=self.task.batch_size,
                epochs=self.task.local_epochs,
                noise_multiplier=self.dp.noise_multiplier,
                max_grad_norm=self.dp.max_grad_norm,
            )
            self.ledger.spend(self.dp.noise_multiplier, q, steps)
            metrics["epsilon"] = self.ledger.epsilon
        else:
            metrics = self.train_fn(self.model, self.x_train, self.y_train, config)
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        metrics["train_seconds"] = time.perf_counter() - started
        trained = model_params(self.model)
        update = {name: trained[name] - global_params[name] for name in global_params}
        if self.personal is not None:
            self._train_personal(global_params, config)
        step_size = metrics.get("local_steps", 0.0) * self.task.learning_rate
        update.update(self.strategy.update_extras(round, update, step_size, sent))
        return update, metrics

    def _tensor(self, array: Any) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _train_personal(self, global_params: Params, config: TrainConfig) -> None:
        assert self.personal is not None
        pull = {k: self._tensor(v.copy()) for k, v in global_params.items()}
        personal_config = TrainConfig(
            round=config.round,
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            optimizer=config.optimizer,
            momentum=config.momentum,
            seed=config.seed + 1,
            proximal_mu=self.personalization.ditto_lambda,
            global_params=pull,
            mixed_precision=config.mixed_precision,
        )
        default_train(self.personal, self.x_train, self.y_train, personal_config)

    @torch.no_grad()
    def _scores(self, model: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        """The model's figures on the held-out split, and the same as counts that add up
        across sites (``stats.score_counts``)."""
        model.eval()
        with autocast(self.device, self.task.mixed_precision):
            logits = model(self.x_test).float()
        losses = nn.functional.cross_entropy(logits, self.y_test, reduction="none")
        correct = logits.argmax(1) == self.y_test
        out = {
            "loss": float(losses.mean()),
            "accuracy": float(correct.float().mean()),
        }
        labels = self.y_test.cpu().numpy()
        binary = self.data.num_classes == 2
        # AUC for binary tasks, when the held-out split holds both classes.
        if binary and len(torch.unique(self.y_test)) == 2:
            scores = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
            out["auc"] = roc_auc(labels, scores)
        block = count_block(
            labels,
            losses.cpu().numpy(),
            correct.cpu().numpy(),
            (logits[:, 1] - logits[:, 0]).cpu().numpy() if binary else None,
        )
        return out, block

    def evaluate(self, params: Params, final: bool = False) -> Scores:
        """The global model's scores on the site's held-out split, and the personal model's
        (prefixed ``personal_``) when personalisation is on: Ditto's at every evaluation,
        the fine-tuned one at the final evaluation."""
        self.set_global(params)
        metrics, block = self._scores(self.model)
        counts = self.score_layout.empty()
        counts[: block.size] = block
        personal: nn.Module | None = self.personal
        if self.personalization.method == "finetune" and final:
            personal = copy.deepcopy(self.model)
            config = TrainConfig(
                round=0,
                local_epochs=self.personalization.epochs,
                batch_size=self.task.batch_size,
                learning_rate=self.task.learning_rate,
                optimizer=self.task.optimizer,
                momentum=self.task.momentum,
                seed=self.task.seed + self._site_seed,
                mixed_precision=self.task.mixed_precision,
            )
            self.train_fn(personal, self.x_train, self.y_train, config)
        if personal is not None:
            personal_metrics, personal_block = self._scores(personal)
            metrics.update({f"personal_{k}": v for k, v in personal_metrics.items()})
            counts[block.size :] = personal_block
            if final and self.personal_dir is not None:
                self._save_personal(personal)
        # The record-level epsilon of its training (a ledger kept only for noised scores
        # has none to say).
        if self.ledger is not None and self.dp is not None:
            metrics["epsilon"] = self.ledger.epsilon
        return Scores(metrics, counts)

    @property
    def score_layout(self) -> ScoreLayout:
        return ScoreLayout(personal=self.personalization.method != "none")

    def _save_personal(self, personal: nn.Module) -> None:
        """The site's personal model, at the site: safetensors, written atomically."""
        path = self.personal_dir / PERSONAL_MODEL_FILE if self.personal_dir else None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(
            path,
            model_params(personal),
            {"site": self.site, "personalization": self.personalization.method},
        )

    def held_out_size(self) -> int:
        return len(self.y_test)
