"""A whole update is folded beside the event loop (``aggregator.folding``): the round's end
waits for it, a stream cut once the update was whole does not undo it, and nothing starts
folding once the round is closing. A real coordinator, real update streams."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.reception import UpdateReception
from fedkube.errors import RoundClosed
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec import parse_job
from fedkube.strategy import build_strategy
from fedkube.testing import manifest
from fedkube.wire.tensors import iter_parts, to_spec

# Large enough that a fold takes the worker a while (16 MiB of float32).
SIZE = 4 << 20


def coordinator() -> Coordinator:
    job = parse_job(manifest("fold", sites=3, min_sites=1))
    params = {"w": np.zeros(SIZE, dtype=np.float32)}
    return Coordinator(job, params, build_strategy(job.spec), None)


def stream(c: Coordinator, site: str, values: np.ndarray, samples: int) -> list[pb.UpdatePart]:
    ref = pb.RoundRef(job="fold", round=1, attempt=1, site=site)
    header = pb.UpdateHeader(
        ref=ref,
        model_version=0,
        num_samples=samples,
        tensors=[to_spec(i) for i in c.update_infos],
        codec=pb.RAW,
    )
    return [pb.UpdatePart(header=header), *iter_parts(pb.UpdatePart, [values])]


def fed(c: Coordinator, parts: list[pb.UpdatePart]) -> UpdateReception:
    reception = c.reception()
    for part in parts:
        reception.feed(part)
    return reception


def test_the_round_waits_for_a_fold_a_cut_stream_does_not_undo() -> None:
    async def scenario() -> None:
        c = coordinator()
        r = c.open_round(1, pb.TRAIN, 0)
        ones = np.full(SIZE, 0.5, dtype=np.float32)
        twos = np.full(SIZE, -1.25, dtype=np.float32)
        first = asyncio.create_task(fed(c, stream(c, "site-0", ones, 3)).finish_aside(c.folds))
        second = asyncio.create_task(fed(c, stream(c, "site-1", twos, 1)).finish_aside(c.folds))
        await asyncio.sleep(0)  # both updates are whole and handed to the worker
        assert len(r.folding) == 2 and not r.done
        first.cancel()  # the first site's stream is cut while its update is folded
        await c.folds.settle(r)
        assert set(r.done) == {"site-0", "site-1"} and not r.receiving
        assert r.accumulator is not None and r.accumulator.count == 2
        mean = r.accumulator.mean()["w"]
        np.testing.assert_array_equal(mean, np.full(SIZE, (3 * 0.5 - 1.25) / 4, dtype=np.float32))
        assert first.cancelled()
        assert await second == SIZE * 4

    asyncio.run(scenario())


def test_an_update_that_ends_while_the_round_closes_is_refused_untouched() -> None:
    async def scenario() -> None:
        c = coordinator()
        r = c.open_round(1, pb.TRAIN, 0)
        reception = fed(c, stream(c, "site-2", np.ones(SIZE, dtype=np.float32), 5))
        await c.folds.settle(r)  # the deadline: the round closes with what it has
        with pytest.raises(RoundClosed, match="round 1 closed while the update was arriving"):
            await reception.finish_aside(c.folds)
        reception.abandon()
        assert not r.done and not r.receiving and not r.folding
        assert r.accumulator is not None and r.accumulator.count == 0

    asyncio.run(scenario())


def test_a_fold_split_over_threads_gives_the_sums_of_one() -> None:
    from fedkube.accumulate.weighted_mean import WeightedMean
    from fedkube.aggregator.updates import SpooledUpdate

    c = coordinator()
    rng = np.random.default_rng(7)
    updates = [rng.standard_normal(SIZE).astype(np.float32) for _ in range(3)]

    def spooled(values: np.ndarray, samples: int) -> SpooledUpdate:
        parts = stream(c, "site-0", values, samples)
        update = SpooledUpdate(parts[0].header, c.update_infos)
        for part in parts[1:]:
            update.add(part.chunk)
        update.finish()
        return update

    split, whole = WeightedMean(c.update_infos), WeightedMean(c.update_infos)
    for samples, values in enumerate(updates, start=2):
        runs = spooled(values, samples).runs(3)
        assert len(runs) == 3
        covered = np.concatenate([v.copy() for run in runs for _, _, v in run])
        np.testing.assert_array_equal(covered, values)  # every piece once, in order
        split.add(spooled(values, samples))
        one = spooled(values, samples)
        for tensor, start, piece in one.pieces():
            whole.fold(tensor, start, piece, one.weight)
        whole.commit(one.weight)
        one.close()
    np.testing.assert_array_equal(split.mean()["w"], whole.mean()["w"])
