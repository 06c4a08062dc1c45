"""Update codecs: int8 and top-k decode without bias (a tolerance derived from the rounding's
variance), fold a piece at a time, refuse an unreadable update whole, are refused where they
would be meaningless, and top-k's error feedback survives a trainer and an aggregator restart
(real processes, real signals)."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from fedkube.codec.base import PIECE_VALUES
from fedkube.codec.decoded import DecodedUpdate
from fedkube.codec.downlink import Downlink, WireArrays, apply_change
from fedkube.codec.error_feedback import RESIDUAL_FILE, UplinkEncoder
from fedkube.codec.int8 import Int8
from fedkube.codec.topk import TopK
from fedkube.spec.job import FederatedJob
from fedkube.storage.safetensors_file import read_safetensors
from fedkube.testing import LocalJob, manifest
from fedkube.wire.tensors import Params, info_of

DRAWS = 4000


def decode(codec: Int8 | TopK, wire: Params, shapes: Params) -> dict[str, np.ndarray]:
    infos = [info_of(n, v) for n, v in shapes.items()]
    out = {n: np.zeros(v.size, dtype=np.float64) for n, v in shapes.items()}
    for t, start, values in DecodedUpdate(WireArrays(wire), codec, infos).pieces():
        out[infos[t].name][start : start + values.size] += values
    return out


def test_int8_decoding_is_unbiased() -> None:
    rng = np.random.default_rng(0)
    update = {"w": rng.normal(0, 1, 3000).astype(np.float32)}
    codec = Int8(block_size=512)
    total = np.zeros(3000)
    padded = np.concatenate([update["w"], np.zeros(72, dtype=np.float32)])  # 6 whole blocks
    scales = np.repeat(np.abs(padded).reshape(-1, 512).max(axis=1) / 127, 512)[:3000]
    for _ in range(DRAWS):
        wire, seen = codec.encode(update)
        decoded = decode(codec, wire, update)["w"]
        assert np.allclose(decoded, seen["w"], atol=1e-6)
        total += decoded
    mean = total / DRAWS
    # One value rounds up with probability p: variance s^2 p (1-p) <= s^2 / 4, so the mean of
    # DRAWS decodings has standard deviation at most s / (2 sqrt(DRAWS)); 5 of them.
    bound = 5 * scales / (2 * math.sqrt(DRAWS))
    assert np.all(np.abs(mean - update["w"]) <= bound + 1e-7)
    # ... while one decoding is off by up to a whole step: the rounding is really random.
    assert np.abs(decoded - update["w"]).max() > 0.3 * scales.min()


def test_topk_sends_the_largest_values_and_int8_values_stay_unbiased() -> None:
    rng = np.random.default_rng(1)
    update = {"a": rng.normal(0, 1, 1000).astype(np.float32), "b": np.float32([3.0, -1.0])}
    exact = TopK(0.05)
    wire, seen = exact.encode(update)
    kept = np.argsort(-np.abs(update["a"]))[:50]
    assert set(wire["a.index"].tolist()) == set(kept.tolist())
    assert np.array_equal(decode(exact, wire, update)["a"], seen["a"])
    assert wire["b.index"].tolist() == [0] and seen["b"].tolist() == [3.0, 0.0]
    quantised = TopK(0.05, quantise=True)
    total = np.zeros(1000)
    for _ in range(DRAWS):
        wire, _ = quantised.encode(update)
        total += decode(quantised, wire, update)["a"]
    scale = np.abs(update["a"]).max() / 127
    dense = np.zeros(1000)
    dense[kept] = update["a"][kept]
    assert np.all(np.abs(total / DRAWS - dense) <= 5 * scale / (2 * math.sqrt(DRAWS)) + 1e-7)


def test_decoding_hands_over_pieces_not_a_dense_copy() -> None:
    update = {"big": np.random.default_rng(2).normal(size=3 * PIECE_VALUES + 5).astype("f4")}
    for codec in (Int8(4096), TopK(0.01), TopK(0.01, quantise=True)):
        wire, seen = codec.encode(update)
        infos = [info_of("big", update["big"])]
        pieces = list(DecodedUpdate(WireArrays(wire), codec, infos).pieces())
        assert max(v.size for _, _, v in pieces) <= PIECE_VALUES
        joined = np.concatenate([v for _, _, v in pieces])
        assert np.allclose(joined, seen["big"].reshape(-1), atol=1e-6)


def test_an_update_with_impossible_positions_is_refused_whole() -> None:
    codec = TopK(0.5)
    update = {"w": np.arange(10, dtype=np.float32)}
    wire, _ = codec.encode(update)
    infos = [info_of("w", update["w"])]
    assert DecodedUpdate(WireArrays(wire), codec, infos).problem() is None
    for bad in ([5, 6, 7, 8, 10], [5, 5, 7, 8, 9]):
        wire["w.index"] = np.array(bad, dtype=np.uint32)
        problem = DecodedUpdate(WireArrays(wire), codec, infos).problem()
        assert problem is not None and "distinct, ascending and below 10" in problem


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"security": {"secureAggregation": {}}}, "security.secureAggregation"),
        ({"security": {"robustAggregation": {"method": "median"}}}, "security.robustAggregation"),
        ({"security": {"updateNormBound": 5.0}}, "security.updateNormBound"),
        (
            {"privacy": {"updateLevel": {"noiseMultiplier": 1.0, "clipNorm": 1.0}}},
            "privacy.updateLevel",
        ),
    ],
)
def test_codecs_are_refused_where_they_would_be_meaningless(extra: dict, named: str) -> None:
    doc = manifest(sites=3, communication={"uplink": {"codec": "topk"}}, **extra)
    with pytest.raises(
        ValueError, match=f"communication.uplink.codec topk cannot be used with {named}"
    ):
        FederatedJob.model_validate(doc)


def test_the_residual_is_kept_only_for_its_own_job(tmp_path: Path) -> None:
    codec = TopK(0.1)
    encoder = UplinkEncoder(codec, tmp_path, key="job-a")
    update = {"w": np.random.default_rng(3).normal(size=100).astype(np.float32)}
    encoder.encode(update)
    assert encoder.residual == {}  # nothing is kept until the update is known to have gone
    encoder.sent(7)
    again = UplinkEncoder(codec, tmp_path, key="job-a")
    assert again.round == 7 and np.array_equal(again.residual["w"], encoder.residual["w"])
    assert UplinkEncoder(codec, tmp_path, key="job-b").residual == {}


def residual(state: Path) -> tuple[int, np.ndarray]:
    arrays, meta = read_safetensors(state / RESIDUAL_FILE)
    return int(meta["round"]), np.concatenate([a.reshape(-1) for a in arrays.values()])


def test_sites_rebuild_the_aggregators_reference_bit_for_bit() -> None:
    rng = np.random.default_rng(4)
    params = {"w": rng.normal(size=(40, 30)).astype("f4"), "b": rng.normal(size=30).astype("f4")}
    for codec in (Int8(256), TopK(0.05), TopK(0.05, quantise=True)):
        down = Downlink(codec)
        model = dict(params)
        down.publish(model, 0)
        whole, site = down.serve(False, 0)
        assert whole is False
        held = {n: v.copy() for n, v in site.items()}
        for version in range(1, 6):
            model = {n: v + rng.normal(0, 0.1, v.shape).astype("f4") for n, v in model.items()}
            down.publish(model, version)
            change, wire = down.serve(True, version - 1)
            assert change
            held = apply_change(codec, held, wire)
            assert all(np.array_equal(held[n], down.reference[n]) for n in held)
        # What the codec left out stays behind the global model, and goes in later changes.
        gap = max(float(np.abs(model[n] - held[n]).max()) for n in held)
        assert gap > 0
        # A site that holds an older model gets the whole reference; the last model is exact.
        assert down.serve(True, 2) == (False, down.reference)
        down.publish(model, 6, whole=True)
        assert all(np.array_equal(down.serve(True, 5)[1][n], model[n]) for n in model)


ROUNDS = 60


def test_topk_residual_survives_a_trainer_and_an_aggregator_restart(tmp_path: Path) -> None:
    # While site-1 is down no round closes (all 3 sites are needed); after it is back they
    # run at about ten a second, so the aggregator's SIGTERM comes with site-0 frozen.
    doc = manifest(
        "codec",
        sites=3,
        rounds=ROUNDS,
        min_sites=3,
        local_epochs=15,  # rounds of a fraction of a second: the signals land mid-job
        model={"name": "mlp", "hiddenSizes": [16]},
        communication={
            "uplink": {"codec": "topk", "fraction": 0.05},
            "downlink": {"codec": "topk_int8", "fraction": 0.05},
        },
    )
    job = LocalJob(tmp_path, doc)
    state = tmp_path / "state-1"
    job.trainer_args["site-1"] = ["--state-dir", str(state)]
    try:
        job.start_all()
        job.wait_for(lambda p: p.round >= 3)
        trainer = job.trainers["site-1"]
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        before_round, before = residual(state)
        assert before_round >= 3 and np.abs(before).sum() > 0
        job.start_trainer("site-1")
        # Read from site-1's own residual file, not the aggregator's progress: rounds run
        # about ten a second once it is back, and a busy aggregator's HTTP answer came 5 s
        # late in CI, after the last round. Site-0 is then frozen (no round closes without
        # it) while the aggregator is stopped, so the job cannot end first.
        end = time.monotonic() + 120
        while residual(state)[0] < before_round + 2 and time.monotonic() < end:
            time.sleep(0.02)
        job.trainers["site-0"].send_signal(signal.SIGSTOP)
        assert f"uplink residual of round {before_round} restored" in job.log("site-1")
        aggregator = job.aggregator
        assert aggregator is not None
        aggregator.send_signal(signal.SIGTERM)
        aggregator.wait()
        job.trainers["site-0"].send_signal(signal.SIGCONT)
        mid_round, mid = residual(state)
        assert before_round + 2 <= mid_round < ROUNDS
        job.start_aggregator()
        result = job.wait_done()
        last_round, last = residual(state)
    finally:
        job.stop()
    assert result.phase == "Succeeded" and result.rounds_completed == ROUNDS
    # The site carried its residual across the aggregator's restart and kept folding it in.
    assert mid_round < last_round == ROUNDS and not np.array_equal(mid, last)
    assert result.global_ is not None and result.global_.accuracy is not None
    assert result.global_.accuracy > 0.85
    # Every update travelled as about 5 % of the model's values, with their positions.
    sizes = {h.bytes_received // len(h.sites) for h in result.history}
    model_bytes = 4 * (30 * 16 + 16 + 16 * 2 + 2)
    assert max(sizes) < model_bytes / 5
