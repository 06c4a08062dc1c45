"""Record-level DP-SGD at a site (Abadi et al. 2016), through Opacus: per-example gradients
clipped to maxGradNorm, Gaussian noise added to each batch's sum, batches drawn by Poisson
sampling so that the accountant's sampling-rate analysis holds. This is the guarantee that
protects each patient; the site's ledger (``PrivacyLedger``) counts what its steps spent.

The noise and the batches must be unpredictable to everyone else, the aggregator included:
both come from generators seeded from the operating system's entropy at every call, never
from the manifest (whose seed is public), and the noise is drawn in Opacus's secure mode
(each value the sum of several Gaussians, against floating-point attacks)."""

from __future__ import annotations

import secrets
import warnings
from typing import Any

import torch
from torch import nn

from fedkube.privacy.planning import dp_steps

__all__ = ["dp_sgd_train", "dp_steps", "secret_generator"]


def secret_generator(device: torch.device | None = None) -> torch.Generator:
    return torch.Generator(device=device or "cpu").manual_seed(secrets.randbits(63))


def dp_sgd_train(
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
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    q, steps = dp_steps(len(y), batch_size, epochs)
    wrapped = GradSampleModule(model)
    optimizer = DPOptimizer(
        torch.optim.SGD(wrapped.parameters(), lr=learning_rate),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=batch_size,
        # Noise is drawn where the gradients are (a CUDA generator for a GPU site).
        generator=secret_generator(x.device),
        secure_mode=True,
    )
    gen = secret_generator()  # Poisson sampling: who is in each batch stays secret too
    loss_fn = nn.CrossEntropyLoss()
    total, seen = 0.0, 0
    with warnings.catch_warnings():
        # Opacus's hooks fire with inputs that need no gradient, which torch warns about.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        try:
            wrapped.train()
            for _ in range(steps):
                chosen = (torch.rand(len(y), generator=gen) < q).to(x.device)
                if not chosen.any():
                    continue  # an empty Poisson batch: no update, nothing learnt from anyone
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(wrapped(x[chosen]), y[chosen])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * int(chosen.sum())
                seen += int(chosen.sum())
        finally:
            wrapped._close()  # removes Opacus's hooks from the model
    return {"train_loss": total / max(seen, 1), "dp_steps": float(steps), "sampling_rate": q}
