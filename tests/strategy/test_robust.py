"""A bad or poisoned site: norm bounds refuse it, robust aggregation outvotes it."""

from __future__ import annotations

import numpy as np
import pytest
from fedkube.accumulate import ArrayUpdate, CoordinateMedian, MultiKrum, TrimmedMean
from fedkube.aggregator.updates import SpooledUpdate
from fedkube.errors import InvalidUpdate
from fedkube.proto import fedkube_pb2 as pb
from fedkube.simulation import simulate
from fedkube.spec import parse_job
from fedkube.testing import manifest
from fedkube.wire.tensors import iter_chunks, specs_of, to_spec


def spooled(arrays: dict[str, np.ndarray], bound: float | None = None) -> SpooledUpdate:
    infos = specs_of(arrays)
    header = pb.UpdateHeader(
        ref=pb.RoundRef(site="s", round=1), num_samples=1, tensors=[to_spec(i) for i in infos]
    )
    u = SpooledUpdate(header, infos, bound)
    for chunk in iter_chunks(list(arrays.values()), chunk_bytes=4096):
        u.add(chunk)
    u.finish()
    return u


def test_norm_bound_refuses_a_large_update() -> None:
    spooled({"w": np.full(100, 0.1, np.float32)}, bound=1.01)  # norm 1.0
    with pytest.raises(InvalidUpdate, match=r"L2 norm 10 is above security.updateNormBound 1.01"):
        spooled({"w": np.full(100, 1.0, np.float32)}, bound=1.01)


def test_spooled_updates_read_back_by_range() -> None:
    a = {"w": np.arange(5000, dtype=np.float32), "b": np.arange(7, dtype=np.float32)}
    u = spooled(a)
    np.testing.assert_array_equal(u.read(0, 1234, 3000), a["w"][1234:4234])
    np.testing.assert_array_equal(u.read(1, 2, 5), a["b"][2:7])


def honest_and_hostile(n_bad: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    honest = [
        {"w": (1.0 + 0.1 * rng.standard_normal(300_000)).astype(np.float32)}
        for _ in range(10 - n_bad)
    ]
    bad = [{"w": -10 * h["w"]} for h in honest[:n_bad]]
    return honest + bad


@pytest.mark.parametrize(
    "make",
    [lambda i: CoordinateMedian(i), lambda i: TrimmedMean(i, 0.2), lambda i: MultiKrum(i, 2, None)],
    ids=["median", "trimmed_mean", "multi_krum"],
)
def test_robust_combination_ignores_two_sign_flipped_sites(make) -> None:
    updates = honest_and_hostile(2)
    infos = specs_of(updates[0])
    acc = make(infos)
    for u in updates:
        acc.add(ArrayUpdate(infos, u, 1.0))
    combined = acc.mean()["w"]
    assert abs(float(combined.mean()) - 1.0) < 0.05  # the honest centre
    naive = np.mean([u["w"] for u in updates], axis=0)
    assert float(naive.mean()) < -1.0  # the plain mean is dragged the other way
    if isinstance(acc, MultiKrum):
        assert acc.chosen == list(range(8))


def poisoned_run(robust: dict | None) -> float:
    doc = manifest("poison", sites=10, rounds=12, dataset="digits", model={"name": "mlp"})
    doc["spec"]["task"].update(learningRate=0.1)
    if robust:
        doc["spec"]["minSitesPerRound"] = 10
        doc["spec"]["security"] = {"robustAggregation": robust}

    def flip(site: str, update: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: -10 * v for k, v in update.items()} if site in ("site-3", "site-7") else update

    return simulate(parse_job(doc), tamper=flip).history[-1].accuracy


def test_median_withstands_poisoned_sites_where_fedavg_collapses() -> None:
    doc = manifest("clean", sites=10, rounds=12, dataset="digits", model={"name": "mlp"})
    doc["spec"]["task"].update(learningRate=0.1)
    clean = simulate(parse_job(doc)).history[-1].accuracy
    assert poisoned_run(None) < 0.5, "FedAvg collapses"
    assert poisoned_run({"method": "median"}) > clean - 0.02
