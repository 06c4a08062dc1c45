"""A peer that opens transfers and then goes quiet cannot stall the other sites."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.testing import LocalJob, manifest

from tests.support.wire import fetch, parts


def _stalled(first: list[pb.UpdatePart], release: threading.Event) -> Iterator[pb.UpdatePart]:
    """Sends ``first`` (nothing, or a header), then nothing more until released."""
    yield from first
    release.wait(120)


def test_an_idle_peer_holds_no_transfer_slot_the_others_need(tmp_path: Path) -> None:
    doc = manifest("refusals", sites=3, rounds=1, min_sites=2, timeout=60)
    doc["spec"]["joinGraceSeconds"] = 0
    job = LocalJob(tmp_path, doc)
    release = threading.Event()
    try:
        job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running", timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{job.port}") as channel:
            stub = pb_grpc.AggregatorStub(channel)
            for site in ("site-0", "site-1"):
                stub.Subscribe(pb.JoinRequest(job="refusals", site=site, protocol_version=3))
            job.wait_for(lambda p: p.open_round == 1, timeout=60)
            _, model = fetch(stub)
            header = next(parts(model, site="site-1"))
            # Far more streams than the aggregator has transfer slots: silent ones, and ones
            # that send site-1's header and stop.
            idle = [stub.SubmitUpdate.future(_stalled([], release)) for _ in range(6)]
            idle += [stub.SubmitUpdate.future(_stalled([header], release)) for _ in range(6)]
            # site-0's update still goes through, at once.
            receipt = stub.SubmitUpdate(parts(model, site="site-0"), timeout=20)
            assert receipt.ref.site == "site-0" and receipt.bytes_received > 0
            # Only one of site-1's stalled streams was admitted; the others were refused (their
            # answers reach this client's futures in their own time: a busy machine's).
            until = time.monotonic() + 15
            while sum(f.done() for f in idle[6:]) < 5 and time.monotonic() < until:
                time.sleep(0.05)
            refused = [
                f for f in idle[6:] if f.done() and f.code() == grpc.StatusCode.ALREADY_EXISTS
            ]
            assert len(refused) == 5
            release.set()
            for f in idle:
                f.cancel()
    finally:
        release.set()
        job.stop()


def _slow_reader(stub: pb_grpc.AggregatorStub, site: str, every: float) -> tuple[str, str]:
    """Reads the model one part every ``every`` seconds (never idle long enough to be
    dropped as silent); how its download ended."""
    request = pb.ModelRequest(ref=pb.RoundRef(job="refusals", round=1, site=site))
    try:
        for _ in stub.GetModel(request, timeout=120):
            time.sleep(every)
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""
    return "OK", ""


def test_slow_readers_lose_their_download_slots_to_the_others(tmp_path: Path) -> None:
    """Four sites read a 17 MB model one part every 3 s: all four download slots, and under
    the idle limit. Below the aggregator's floor (--min-transfer-rate, 2048 KiB/s here) each
    is dropped after the grace, and a fifth site gets the model. (The model is far larger
    than what the sockets and gRPC buffer ahead of a reader without bandwidth probing, a
    few MB on loopback.)"""
    doc = manifest("refusals", sites=5, rounds=1, min_sites=5, timeout=120,
                   model={"name": "mlp", "hiddenSizes": [4096, 1024]})  # fmt: skip
    doc["spec"]["joinGraceSeconds"] = 0
    job = LocalJob(tmp_path, doc)
    job.aggregator_args = ["--min-transfer-rate", "2048"]
    try:
        job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running", timeout=60)
        # No bandwidth probing: the readers' first fast chunks would otherwise let gRPC
        # grow their windows to most of the model, which would then sit in their buffers.
        options = [("grpc.max_receive_message_length", 1 << 24), ("grpc.http2.bdp_probe", 0)]
        with grpc.insecure_channel(f"127.0.0.1:{job.port}", options=options) as channel:
            stub = pb_grpc.AggregatorStub(channel)
            for site in ("site-0", "site-1", "site-2", "site-3", "site-4"):
                stub.Subscribe(pb.JoinRequest(job="refusals", site=site, protocol_version=3))
            job.wait_for(lambda p: p.open_round == 1, timeout=60)
            with ThreadPoolExecutor(4) as pool:
                slow = [pool.submit(_slow_reader, stub, f"site-{i}", 3.0) for i in range(4)]
                time.sleep(1.0)  # they hold every slot
                version, model = fetch(stub, site="site-4")
                ends = [f.result(timeout=120) for f in slow]
            assert version == 0 and sum(v.nbytes for v in model.values()) > 16 << 20
            for code, details in ends:
                assert code == "DEADLINE_EXCEEDED", (code, details)
                assert "below the aggregator's floor of 2048 KiB/s" in details, details
    finally:
        job.stop()
