"""Hundreds of generated hostile inputs against a real aggregator process (issue 26): each
refused or harmless, the aggregator answering after every one, its model unchanged and
finite, and no thread or open file left behind."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.testing import LocalJob, manifest

from tests.fuzz.hostile_client import JOB, attack, finite
from tests.support.wire import FakeSiteStream, fetch


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure aggregation"])
def test_generated_hostile_inputs_are_refused_or_harmless(tmp_path: Path, secure: bool) -> None:
    # Three sites must answer: the attack plays site-0, site-1 stays silent and site-2 never
    # trains, so no round can close and the model must not move at all.
    doc = manifest(JOB, sites=3, rounds=2, min_sites=3, timeout=900, joinGraceSeconds=0.5)
    if secure:  # the rounds open at ADVERTISE_KEYS: the secure handlers take the inputs
        doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    job = LocalJob(tmp_path, doc)
    try:
        agg = job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running", timeout=60)
        channel = grpc.insecure_channel(
            f"127.0.0.1:{job.port}", options=[("grpc.max_receive_message_length", 1 << 24)]
        )
        stub = pb_grpc.AggregatorStub(channel)
        streams = [FakeSiteStream(stub, s, JOB) for s in ("site-0", "site-1")]
        assert all(s.next_task().ref.round == 1 for s in streams)
        version, initial = fetch(stub, job=JOB)
        process = psutil.Process(agg.pid)
        threads, files = process.num_threads(), process.num_fds()

        def answers() -> bool:
            try:
                stub.GetProgress(pb.ProgressRequest(ref=pb.RoundRef(job=JOB)), timeout=10)
            except grpc.RpcError as e:
                return e.code() != grpc.StatusCode.UNAVAILABLE
            return agg.poll() is None

        outcome = attack(stub, initial, answers)
        assert outcome.unanswered == [], outcome.unanswered
        assert outcome.inputs >= 200 and len(outcome.distinct) == outcome.inputs
        # Most are refused with a status naming the problem; none broke the service.
        assert "UNKNOWN" not in outcome.by_status and "INTERNAL" not in outcome.by_status, (
            outcome.by_status
        )
        after_version, after = fetch(stub, job=JOB)
        assert after_version == version == 0
        assert finite(after)
        for name in initial:
            np.testing.assert_array_equal(after[name], initial[name])
        # Nothing leaked: threads and open files as before (gRPC's pollers and a few
        # connections' worth of slack).
        assert process.num_threads() <= threads + 4, (threads, process.num_threads())
        assert process.num_fds() <= files + 16, (files, process.num_fds())
        channel.close()
    finally:
        job.stop()
