"""The built-in training loop split across a site's worker processes (torch.distributed DDP):
every process draws the same batches, trains on its slice of each, and DDP averages the
gradients, so every process takes the step one process would take on the whole batch.

Each process's loss is the sum over its slice scaled by ``world / batch``: DDP's average of
those gradients is the batch's mean gradient however unevenly the last batch divides. The
replicas start each round from rank 0's parameters (``sync_from_rank0``) and stay equal,
step by step. The result differs from one process's only by the order floats are summed in.
DP-SGD's loop is split the same way (``ddp_dp_sgd_train``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fedkube.trainer.device import autocast
from fedkube.trainer.dp_sgd import dp_steps, secret_generator
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
    # Loss sum, correct, steps; where the data is (NCCL reduces GPU tensors only).
    totals = torch.zeros(3, dtype=torch.float64, device=x.device)
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


def ddp_dp_sgd_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    noise_multiplier: float,
    max_grad_norm: float,
) -> dict[str, Any]:
    """DP-SGD (``dp_sgd.dp_sgd_train``) across the site's processes: rank 0 draws each
    Poisson batch and broadcasts it, every rank clips its slice's per-example gradients, the
    clipped sums are added across ranks and rank 0 adds the noise once (Opacus's
    DistributedDPOptimizer). The step is the one a single process takes with the same
    batch and the same noise; the batches and the noise stay secret (rank 0's generators,
    seeded from the operating system)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DistributedDPOptimizer

    rank, world = dist.get_rank(), dist.get_world_size()
    q, steps = dp_steps(len(y), batch_size, epochs)
    wrapped = GradSampleModule(model)
    optimizer = DistributedDPOptimizer(
        torch.optim.SGD(wrapped.parameters(), lr=learning_rate),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        # Each rank's clipped sum is divided by this, then the ranks' average is taken:
        # together, the batch's sum over the expected batch size, as one process divides.
        expected_batch_size=batch_size / world,
        generator=secret_generator(x.device) if rank == 0 else None,
        secure_mode=True,
    )
    gen = secret_generator() if rank == 0 else None
    loss_fn = nn.CrossEntropyLoss()
    totals = torch.zeros(2, dtype=torch.float64, device=x.device)  # loss sum, examples
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        try:
            wrapped.train()
            for _ in range(steps):
                chosen = torch.zeros(len(y), dtype=torch.uint8)
                if gen is not None:
                    chosen = (torch.rand(len(y), generator=gen) < q).to(torch.uint8)
                chosen = chosen.to(x.device)  # received in place: where it is broadcast
                dist.broadcast(chosen, src=0)
                rows = chosen.nonzero().flatten()
                if len(rows) == 0:
                    continue  # an empty Poisson batch, skipped by every rank alike
                mine = rows[rank::world]
                optimizer.zero_grad(set_to_none=True)
                if len(mine):
                    loss = loss_fn(wrapped(x[mine]), y[mine])
                    loss.backward()
                    done = [float(loss.detach()) * len(mine), len(mine)]
                    totals += torch.tensor(done, dtype=torch.float64, device=x.device)
                else:  # no example here this step: an empty per-example gradient
                    for p in wrapped.parameters():
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device)
                optimizer.step()
        finally:
            wrapped._close()
    dist.all_reduce(totals)
    return {
        "train_loss": float(totals[0]) / max(float(totals[1]), 1.0),
        "dp_steps": float(steps),
        "sampling_rate": q,
    }
