"""What a hostile site sends cannot break the job (issue 26): a coded update whose scale
overflows is refused whole, naming its site, and the honest sites' round goes on; a new
global model (or a server optimiser's state) that would not be finite is never published.
A real aggregator over gRPC, the hostile site played by hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from fedkube.aggregator.model_guard import apply_checked
from fedkube.codec.int8 import Int8
from fedkube.codec.topk import TopK
from fedkube.errors import InvalidUpdate
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.strategy.fedavg import FedAvg
from fedkube.strategy.fedopt import FedOpt
from fedkube.testing import LocalJob, manifest
from fedkube.wire.tensors import Params

from tests.engine.test_refusals import aggregator_metrics
from tests.support.wire import FakeSiteStream, fetch, parts

CODECS = {
    "int8": (Int8(block_size=16), pb.QUANTISED_INT8),
    "topk_int8": (TopK(0.5, quantise=True), pb.TOP_K_INT8),
}


@pytest.fixture(scope="module", params=sorted(CODECS))
def coded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    name = request.param
    doc = manifest(
        "hostile",
        sites=2,
        rounds=3,
        min_sites=2,
        joinGraceSeconds=0.5,
        communication={"uplink": {"codec": name, "blockSize": 16, "fraction": 0.5}},
    )
    job = LocalJob(tmp_path_factory.mktemp(f"hostile-{name}"), doc)
    job.start_aggregator()
    job.wait_for(lambda p: p.phase == "Running", timeout=60)
    yield name, job
    job.stop()


def _overflowing(wire: Params) -> Params:
    """Every code at its largest, every scale finite but so large that code times scale is
    past float32: a wire that passes the finite-value check of each chunk."""
    out = {}
    for key, values in wire.items():
        if key.endswith(".scale"):
            out[key] = np.full_like(values, 3e38)
        elif values.dtype == np.int8:
            out[key] = np.full_like(values, 127)
        else:
            out[key] = values
    return out


def test_a_coded_update_that_decodes_to_inf_is_refused_and_the_round_goes_on(coded) -> None:
    name, job = coded
    codec, wire_codec = CODECS[name]
    stub = pb_grpc.AggregatorStub(grpc.insecure_channel(f"127.0.0.1:{job.port}"))
    hostile, honest = (
        FakeSiteStream(stub, "site-0", "hostile"),
        FakeSiteStream(stub, "site-1", "hostile"),
    )
    assert hostile.next_task().ref.round == 1 and honest.next_task().ref.round == 1
    version, initial = fetch(stub, job="hostile")
    rng = np.random.default_rng(1)
    good = {k: (rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in initial.items()}
    wire, _ = codec.encode(good)

    with pytest.raises(grpc.RpcError) as e:
        stub.SubmitUpdate(parts(_overflowing(wire), job="hostile", codec=wire_codec))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = e.value.details()
    assert "scale 3e+38" in details and "is not a finite float32" in details, details
    # The refusal is counted against the site that sent it.
    counted = (
        'fedkube_site_refusals_total{fedjob="hostile",fedjob_namespace="local",'
        'reason="InvalidUpdate",site="site-0"}'
    )
    assert f"{counted} 1.0" in aggregator_metrics(job)

    # Refused whole, and only that update: the same site's sound update is taken, and the
    # honest site's, and round 1 closes on them with a finite model.
    stub.SubmitUpdate(parts(wire, job="hostile", codec=wire_codec))
    stub.SubmitUpdate(parts(codec.encode(good)[0], site="site-1", job="hostile", codec=wire_codec))
    assert honest.next_task().ref.round == 2
    version, after = fetch(stub, job="hostile", round=2)
    assert version == 1
    assert all(np.isfinite(v).all() for v in after.values())
    assert any(not np.array_equal(after[k], initial[k]) for k in initial)
    progress = job.progress()
    assert progress is not None and progress.phase == "Running"


def test_a_new_model_that_would_not_be_finite_is_not_published() -> None:
    big = np.float32(3e38)
    params = {"w": np.full(4, big, dtype=np.float32)}
    mean = {"w": np.full(4, big, dtype=np.float32)}  # finite, but the sum is not
    new, why = apply_checked(FedAvg(), params, mean, 1, 2)
    assert new is None and why == "the new global model: tensor 'w' is not finite at element 0"
    assert np.all(params["w"] == big)  # the published model is untouched

    nan = {"w": np.array([0, np.nan, 0, 0], dtype=np.float32)}
    new, why = apply_checked(FedAvg(), params, nan, 1, 2)
    assert new is None and why == "the round's mean update: tensor 'w' is not finite at element 1"


def test_a_server_optimiser_state_gone_to_inf_is_put_back() -> None:
    opt = FedOpt("fedadam", 0.1, 0.9, 0.99, 1e-3)
    params = {"w": np.zeros(3, dtype=np.float32)}
    fine, _ = apply_checked(opt, params, {"w": np.ones(3, dtype=np.float32)}, 1, 2)
    assert fine is not None
    before = {k: v.copy() for k, v in opt.state_arrays().items()}
    # The squared update overflows v: the model stays finite, the optimiser would not.
    huge = {"w": np.full(3, 3e38, dtype=np.float32)}
    new, why = apply_checked(opt, fine, huge, 2, 2)
    assert new is None and why.startswith("the fedopt state: tensor 'v/w' is not finite"), why
    after = opt.state_arrays()
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJob]:
    doc = manifest("bounded", sites=2, rounds=3, min_sites=2, joinGraceSeconds=0.5)
    doc["spec"]["sites"][0]["maxSamples"] = 50
    job = LocalJob(tmp_path_factory.mktemp("bounded"), doc)
    job.start_aggregator()
    job.wait_for(lambda p: p.phase == "Running", timeout=60)
    yield job
    job.stop()


def test_a_site_claiming_more_samples_than_it_may_outweighs_no_one(bounded: LocalJob) -> None:
    stub = pb_grpc.AggregatorStub(grpc.insecure_channel(f"127.0.0.1:{bounded.port}"))
    streams = [FakeSiteStream(stub, s, "bounded") for s in ("site-0", "site-1")]
    assert all(s.next_task().ref.round == 1 for s in streams)
    _, initial = fetch(stub, job="bounded")
    pull = {k: np.full(v.shape, 1.0, np.float32) for k, v in initial.items()}
    for claim, bound in ((1 << 62, "at most 50 (sites[0].maxSamples)"), (51, "at most 50")):
        with pytest.raises(grpc.RpcError) as e:
            stub.SubmitUpdate(parts(pull, job="bounded", num_samples=claim))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"the update claims {claim} samples; site 'site-0' may claim" in e.value.details()
        assert bound in e.value.details()
    # At its bound it is taken, and weighs 50 against the other's 50.
    stub.SubmitUpdate(parts(pull, job="bounded", num_samples=50))
    zeros = {k: np.zeros_like(v) for k, v in initial.items()}
    stub.SubmitUpdate(parts(zeros, site="site-1", job="bounded", num_samples=50))
    assert streams[1].next_task().ref.round == 2
    _, after = fetch(stub, job="bounded", round=2)
    for k in initial:
        np.testing.assert_allclose(after[k], initial[k] + 0.5, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("samples", "metrics", "said"),
    [
        (1 << 62, {"accuracy": 0.9, "loss": 0.3}, "the evaluation claims 4611686018427387904"),
        (10, {"accuracy": 1e300, "loss": 0.3}, "accuracy = 1e+300, expected 0 to 1"),
        (10, {"accuracy": 0.9, "loss": -2.0}, "loss = -2, expected 0 to inf"),
        (10, {"accuracy": 0.9, "personal_auc": 1.5}, "personal_auc = 1.5, expected 0 to 1"),
        (10, {"accuracy": 0.9, "plugin_metric": float("nan")}, "plugin_metric = nan"),
    ],
    ids=["samples", "accuracy", "loss", "personal auc", "a plug-in's NaN"],
)
def test_an_evaluation_out_of_range_is_refused(
    bounded: LocalJob, samples: int, metrics: dict[str, float], said: str
) -> None:
    stub = pb_grpc.AggregatorStub(grpc.insecure_channel(f"127.0.0.1:{bounded.port}"))
    report = pb.Evaluation(
        ref=pb.RoundRef(job="bounded", round=1, attempt=1, site="site-0"),
        model_version=0,
        num_samples=samples,
        metrics=metrics,
    )
    with pytest.raises(grpc.RpcError) as e:
        stub.ReportEvaluation(report)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert said in e.value.details(), e.value.details()


def test_a_sites_bound_is_the_least_of_round_0_its_manifest_and_the_protocol() -> None:
    from fedkube.aggregator.sample_bounds import SampleBounds
    from fedkube.spec.load import parse_job

    doc = manifest("b", sites=3)
    doc["spec"]["sites"][0]["maxSamples"] = 500
    doc["spec"]["sites"][1]["maxSamples"] = 80
    rows = {"site-0": 120, "site-1": 300}
    bounds = SampleBounds(parse_job(doc).spec, lambda: rows)
    assert bounds.bound("site-0") == (120, "its row count in round 0")
    assert bounds.bound("site-1") == (80, "sites[1].maxSamples")
    assert bounds.bound("site-2") == (1 << 40, "the protocol's bound, 2^40")


def test_noised_evaluation_counts_beyond_what_the_site_has_are_refused(tmp_path: Path) -> None:
    """Under differential privacy a site sends noised counts; counts of more records than the
    site may claim (2^62 'correct' answers) were made up, whatever the noise."""
    from fedkube.aggregator.coordinator import Coordinator
    from fedkube.spec.load import parse_job
    from fedkube.stats.score_counts import BLOCK, count_bounds, noised

    doc = manifest("noised", sites=2, evaluation={"noiseMultiplier": 1.0})
    doc["spec"]["sites"][0]["maxSamples"] = 40
    c = Coordinator(parse_job(doc), {"w": np.zeros(4, np.float32)}, FedAvg(), tmp_path)
    c.connect("noised", "site-0")

    def report(counts: np.ndarray) -> None:
        c.evaluations.report(
            pb.Evaluation(
                ref=pb.RoundRef(job="noised", round=1, attempt=1, site="site-0"),
                model_version=0,
                counts=[int(x) for x in counts],
            )
        )

    honest = np.zeros(BLOCK, np.int64)
    honest[:3] = [40, 30, 40 * 65536]  # 40 rows, 30 correct, a loss of 1 each
    honest[3 + 100] = 25
    honest[3 + 256 + 100] = 15
    report(noised(honest, 1.0))  # taken: within what 40 records and the noise can give
    lo, hi = count_bounds(BLOCK, 40, 1.0)
    assert lo[0] < 0 < 40 < hi[0] < 40 + 100
    made_up = honest.copy()
    made_up[1] = 1 << 62
    with pytest.raises(InvalidUpdate, match=r"evaluation count 1 is 4611686018427387904, outside"):
        report(made_up)


def test_a_site_never_allocates_the_model_a_hostile_aggregator_declares() -> None:
    """The aggregator's header says how large the model is: a site checks it against its
    own model before it allocates a byte (np.empty of 2^40 floats was a MemoryError)."""
    from fedkube.errors import JobFailed
    from fedkube.trainer.model_download import read_model

    header = pb.ModelHeader(
        tensors=[pb.TensorSpec(name="weight", dtype=pb.FLOAT32, shape=[1 << 20, 1 << 20])]
    )
    with pytest.raises(JobFailed, match=r"declares a model of 4398046511104 bytes; this job's"):
        read_model(header, iter(()), 4096)
    repeated = pb.ModelHeader(tensors=[pb.TensorSpec(name="w", dtype=pb.FLOAT32, shape=[2])] * 2)
    with pytest.raises(JobFailed, match="repeats a tensor name"):
        read_model(repeated, iter(()), 4096)
    bad = pb.ModelHeader(tensors=[pb.TensorSpec(name="w", dtype=pb.FLOAT32, shape=[-3])])
    with pytest.raises(JobFailed, match="negative dimension"):
        read_model(bad, iter(()), 4096)


def test_progress_answers_only_the_token_the_operator_gave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.error
    import urllib.request

    from fedkube.transport.progress_client import fetch_progress

    monkeypatch.setenv("FEDKUBE_PROGRESS_TOKEN", "the-operators-token")
    job = LocalJob(tmp_path, manifest("guarded", sites=2, rounds=1, joinGraceSeconds=0.5))
    try:
        job.start_aggregator()
        url = f"http://127.0.0.1:{job.http_port}/progress"
        seen = None
        for _ in range(300):
            seen = fetch_progress(url, token="the-operators-token")
            if seen is not None:
                break
            time.sleep(0.1)
        assert seen is not None and seen.job == "guarded"
        for header in (None, "Bearer wrong", "the-operators-token"):
            request = urllib.request.Request(url)
            if header:
                request.add_header("Authorization", header)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(request, timeout=5)
            assert e.value.code == 401
        # Health and metrics stay open (the kubelet, Prometheus).
        with urllib.request.urlopen(f"http://127.0.0.1:{job.http_port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        job.stop()
