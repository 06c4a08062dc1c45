"""Bad updates are refused with a clear gRPC status and never reach the model.

A real aggregator process; the test plays site-0 over real gRPC on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.testing import LocalJob, manifest
from fedkube.wire.tensors import specs_of, to_spec

from tests.support.wire import FakeSiteStream, fetch, parts


def refused(stub: pb_grpc.AggregatorStub, it: Iterator[pb.UpdatePart]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        stub.SubmitUpdate(it)
    return e.value


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJob]:
    tmp = tmp_path_factory.mktemp("refusals")
    doc = manifest("refusals", sites=2, rounds=3, min_sites=1, joinGraceSeconds=0.5)
    job = LocalJob(tmp, doc)
    job.start_aggregator()
    job.wait_for(lambda p: p.phase == "Running", timeout=60)
    yield job
    job.stop()


def test_each_bad_update_is_refused_and_the_model_is_untouched(aggregator: LocalJob) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{aggregator.port}")
    stub = pb_grpc.AggregatorStub(channel)
    site0 = FakeSiteStream(stub, "site-0")
    site1 = FakeSiteStream(stub, "site-1")
    task = site0.next_task()
    assert task.ref.round == 1 and task.stage == pb.TRAIN
    assert site1.next_task().ref.round == 1
    version, initial = fetch(stub)
    assert version == 0
    rng = np.random.default_rng(0)
    good = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in initial.items()}

    e = refused(stub, parts(good, site="intruder"))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "site 'intruder' is not a site of job 'refusals'" in e.details()

    e = refused(stub, parts(good, job="other-job"))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED

    wrong = {k: np.zeros((v.shape[0] + 1, *v.shape[1:]), np.float32) for k, v in good.items()}
    e = refused(stub, parts(wrong))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match the model's" in e.details() and "weight" in e.details()

    # A header that claims the right shapes, followed by too little data.
    short = {"weight": good["weight"]}  # the bias never comes
    e = refused(stub, parts(short, specs=[to_spec(i) for i in specs_of(good)]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stream ended early" in e.details()

    for bad_value in (np.nan, np.inf, -np.inf):
        poisoned = {k: v.copy() for k, v in good.items()}
        poisoned["weight"].reshape(-1)[7] = bad_value
        e = refused(stub, parts(poisoned))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "non-finite value (NaN or Inf) at element 7" in e.details()

    e = refused(stub, parts(good, round=2))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "round 2 is not open for updates (round 1 is open)" in e.details()

    e = refused(stub, parts(good, version=5))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model version 5" in e.details()

    receipt = stub.SubmitUpdate(parts(good))
    assert receipt.ref.round == 1 and receipt.bytes_received == sum(v.nbytes for v in good.values())

    e = refused(stub, parts(good))
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already sent its update for round 1" in e.details()

    zeros = {k: np.zeros_like(v) for k, v in good.items()}
    stub.SubmitUpdate(parts(zeros, site="site-1"))

    # Round 1 closed with two good updates of equal weight: the model moved by their mean
    # and by nothing that was refused.
    assert site0.next_task().ref.round == 2
    version, after = fetch(stub)
    assert version == 1
    for k in initial:
        np.testing.assert_allclose(after[k], initial[k] + good[k] / 2, rtol=1e-6, atol=1e-7)

    e = refused(stub, parts(good, round=1))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, "an update for a closed round"
    assert "round 1 is not open for updates (round 2 is open)" in e.details()

    metrics = aggregator_metrics(aggregator)
    assert (
        'fedkube_refusals_total{fedjob="refusals",fedjob_namespace="local",'
        'reason="InvalidUpdate"} 6.0' in metrics
    )
    assert (
        'fedkube_refusals_total{fedjob="refusals",fedjob_namespace="local",'
        'reason="DuplicateUpdate"} 1.0' in metrics
    )
    # Per site, by the job's own site names; whatever else a message claimed is "unknown".
    site0 = (
        'fedkube_site_refusals_total{fedjob="refusals",fedjob_namespace="local",'
        'reason="DuplicateUpdate",site="site-0"}'
    )
    assert f"{site0} 1.0" in metrics
    assert 'site="intruder"' not in metrics
    channel.close()


def aggregator_metrics(job: LocalJob) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{job.http_port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_a_trainer_of_another_protocol_version_is_refused_at_subscribe(
    aggregator: LocalJob,
) -> None:
    """Two versions behind: more than the compatibility table allows (one behind is taken in
    a job like this one: tests/engine/test_protocol_versions.py)."""
    with grpc.insecure_channel(f"127.0.0.1:{aggregator.port}") as channel:
        stub = pb_grpc.AggregatorStub(channel)
        old = pb.JoinRequest(job="refusals", site="site-1", protocol_version=PROTOCOL_VERSION - 2)
        with pytest.raises(grpc.RpcError) as e:
            next(iter(stub.Subscribe(old, timeout=10)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        f"site 'site-1' speaks fedkube protocol {PROTOCOL_VERSION - 2}, this aggregator speaks "
        f"{PROTOCOL_VERSION} and takes {PROTOCOL_VERSION - 1} too, no older: upgrade site "
        "'site-1' to fedkube" in e.value.details()
    )
