"""The local loop's own optimisers and AUC agree with the libraries they stand in for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedkube.trainer.optimizers import Adam, Sgd
from fedkube.trainer.scores import roc_auc
from sklearn.metrics import roc_auc_score


def _train(make_optimizer: object, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = make_optimizer(model.parameters())  # type: ignore[operator]
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda p: Sgd(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1, foreach=False)),
        (
            lambda p: Sgd(p, lr=0.05, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=False),
        ),
        (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01, foreach=False)),
    ],
    ids=["sgd", "sgd-momentum", "adam"],
)
def test_the_local_optimisers_step_as_torch_optim_does(ours: object, theirs: object) -> None:
    for mine, reference in zip(_train(ours), _train(theirs), strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-7)


def test_roc_auc_agrees_with_scikit_learn_ties_included() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 200))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.random(n), int(rng.integers(1, 4)))  # rounding makes ties
        assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(4), np.arange(4.0))
