"""The built-in training loop split across a site's worker processes (torch.distributed DDP):
every process draws the same batches, trains on its slice of each, and DDP averages the
gradients, so every process takes the step one process would take on the whole batch.

Each process's loss is the sum over its slice scaled by ``world / batch``: DDP's average of
those gradients is the batch's mean gradient however unevenly the last batch divides. The
replicas start each round from rank 0's parameters (``sync_from_rank0``) and stay equal,
step by step. The result differs from one process's only by the order floats are summed in.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fedkube.trainer.device import autocast
from fedkube.trainer.local import TrainConfig
from fedkube.trainer.optimizers import build_optimizer


def sync_from_rank0(model: nn.Module) -> None:
    """Every parameter and buffer set to rank 0's, in place."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def ddp_train(
    ddp: DistributedDataParallel, x: torch.Tensor, y: torch.Tensor, config: TrainConfig
) -> dict[str, float]:
    """One local round on this process's slice of every batch; the same metrics on every
    rank (the whole site's)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model: nn.Module = ddp.module
    opt = build_optimizer(config.optimizer, ddp.parameters(), config.learning_rate, config.momentum)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    gen = torch.Generator().manual_seed(config.seed)  # the same order on every rank
    # FedProx's pull towards the round's global model: every rank holds it after the sync.
    params = list(model.parameters())
    prox = [(p, p.detach().clone()) for p in params] if config.proximal_mu else []
    model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, steps
    for _ in range(config.local_epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), config.batch_size):
            batch = order[start : start + config.batch_size]
            mine = batch[rank::world].to(x.device)
            xb, yb = x[mine], y[mine]
            opt.zero_grad(set_to_none=True)
            with autocast(x.device, config.mixed_precision):
                logits = ddp(xb)
                loss_sum = loss_fn(logits.float(), yb)
            objective = loss_sum * (world / len(batch))
            if prox:
                # The same on every rank, so DDP's average leaves it whole.
                objective = objective + config.proximal_mu / 2 * sum(
                    torch.sum((p - g) ** 2) for p, g in prox
                )
            objective.backward()
            opt.step()
            totals[0] += float(loss_sum.detach())
            totals[1] += int((logits.argmax(1) == yb).sum())
            totals[2] += 1
    steps = float(totals[2])
    dist.all_reduce(totals[:2])
    seen = config.local_epochs * len(y)
    return {
        "train_loss": float(totals[0]) / seen,
        "train_accuracy": float(totals[1]) / seen,
        "local_steps": steps,
    }
