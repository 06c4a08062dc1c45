"""One round engine, two transports: the in-process simulation and real processes over gRPC
run the same coordinator and site code, so they train the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedkube.simulation import simulate
from fedkube.spec import parse_job
from fedkube.testing import LocalJob, manifest
from safetensors.numpy import load_file


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [{"name": "fedavg"}, {"name": "scaffold"}])
def test_in_process_links_and_grpc_give_the_same_model_bit_for_bit(
    tmp_path: Path, strategy: dict[str, str]
) -> None:
    doc = manifest("both-ways", sites=4, rounds=4, min_sites=4, strategy=strategy)
    over_grpc = LocalJob(tmp_path, doc).run()
    in_process = simulate(parse_job(doc))

    assert [h.sites for h in over_grpc.history] == [h.sites for h in in_process.history]
    model = load_file(over_grpc.model_path)
    assert model.keys() == in_process.params.keys()
    for name, value in in_process.params.items():
        assert model[name].dtype == value.dtype
        assert np.array_equal(model[name], value), f"{name} differs between the transports"
    # The final evaluation is the same code on the same model: the same scores.
    assert over_grpc.global_ is not None and in_process.history[-1].accuracy is not None
    assert over_grpc.global_.accuracy == pytest.approx(in_process.history[-1].accuracy, abs=0)
