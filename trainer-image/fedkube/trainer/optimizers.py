"""The local training loop's optimisers: SGD (with momentum) and Adam, with the update rules
and defaults of ``torch.optim`` (single-tensor path), written out.

Why not ``torch.optim``: constructing any of its optimisers imports ``torch._dynamo``, which
costs 1.3 s on this machine kind; a site pays it before its first update, and `fedkube run`
before round one. These are a few tensor operations each; a test checks they step exactly as
``torch.optim`` does. DP-SGD keeps Opacus's optimiser, which wraps ``torch.optim``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class LocalOptimizer:
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameter")
        self.lr = lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p, p.grad)

    def _update(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        raise NotImplementedError


class Sgd(LocalOptimizer):
    """p -= lr * b, with b = momentum * b + grad (b = grad on the first step): torch's SGD
    with dampening 0, no Nesterov, no weight decay."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0
    ) -> None:
        super().__init__(params, lr)
        self.momentum = momentum
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def _update(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        if self.momentum:
            buf = self.buffers[i]
            if buf is None:
                buf = self.buffers[i] = torch.clone(grad).detach()
            else:
                buf.mul_(self.momentum).add_(grad)
            grad = buf
        p.add_(grad, alpha=-self.lr)


class Adam(LocalOptimizer):
    """torch's Adam with its defaults: betas (0.9, 0.999), eps 1e-8, no weight decay."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = [0] * len(self.params)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def _update(self, i: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        self.steps[i] += 1
        step = self.steps[i]
        exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
        exp_avg.lerp_(grad, 1 - self.beta1)
        exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad.conj(), value=1 - self.beta2)
        bias_correction1 = 1 - self.beta1**step
        bias_correction2 = 1 - self.beta2**step
        step_size = self.lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0
) -> LocalOptimizer:
    if name == "adam":
        return Adam(params, lr)
    return Sgd(params, lr, momentum)
