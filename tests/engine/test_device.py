"""task.device: a site trains where its pod's GPU is, or on the CPU; `cuda` without a GPU is
refused with what to do. (These machines have no GPU: the CUDA path runs on a lent one.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedkube.data import load_site_data
from fedkube.errors import ModelError
from fedkube.models.registry import initial_params
from fedkube.spec import parse_job
from fedkube.testing import manifest
from fedkube.trainer.local import LocalTrainer


def _trainer(**task: object) -> LocalTrainer:
    doc = manifest("device", sites=2, rounds=1)
    doc["spec"]["task"].update(task)
    spec = parse_job(doc).spec
    data = load_site_data(spec, "site-0")
    return LocalTrainer(spec.task, data, "site-0", None, spec.privacy)


def test_auto_and_cpu_train_on_the_cpu_here_and_agree() -> None:
    assert not torch.cuda.is_available()
    auto, cpu = _trainer(device="auto"), _trainer(device="cpu", mixedPrecision=True)
    assert auto.device == cpu.device == torch.device("cpu")
    start = initial_params(auto.task, auto.data.num_features, auto.data.num_classes)
    (a, _), (c, _) = auto.train(dict(start), 1, {}), cpu.train(dict(start), 1, {})
    # Mixed precision has no effect on a CPU: the same update, bit for bit.
    assert a.keys() == c.keys() and all(np.array_equal(a[k], c[k]) for k in a)
    assert cpu.evaluate(start).metrics["accuracy"] >= 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_site_without_a_gpu_is_refused_with_what_to_do() -> None:
    with pytest.raises(ModelError, match=r"task\.device is cuda, but this site's trainer sees"):
        _trainer(device="cuda")


def test_the_spec_refuses_an_unknown_device() -> None:
    doc = manifest("device", sites=2, rounds=1)
    doc["spec"]["task"]["device"] = "tpu"
    with pytest.raises(Exception, match=r"task\.device"):
        parse_job(doc)
