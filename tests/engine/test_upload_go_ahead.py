"""An upload waits for the aggregator's go-ahead (a transfer slot) before sending past its
header, so the aggregator can give each upload a window wide enough for a long link without
waiting uploads filling it. Old and new releases on either side still work together."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fedkube.cli.launch import spawn_fedkube
from fedkube.errors import AggregatorUnavailable
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.proto.compat import GO_AHEAD_METADATA
from fedkube.testing import LocalJob, manifest
from fedkube.transport.grpc_link import GrpcLink

from tests.support.engine_from_git import ask, engine_at
from tests.support.wire import FakeSiteStream, fetch, parts

# The last commit whose aggregator gives no go-ahead (protocol 7 as well).
NO_GO_AHEAD_COMMIT = "bc6864d976db52d392e116b943cc34bade34ceec"


def _stalled(first: list[pb.UpdatePart], release: threading.Event) -> Iterator[pb.UpdatePart]:
    yield from first
    release.wait(120)


class Counted:
    """An update's parts, counting how many gRPC has taken to send."""

    def __init__(self, items: Iterator[pb.UpdatePart]) -> None:
        self.items, self.taken = items, 0

    def __iter__(self) -> Iterator[pb.UpdatePart]:
        for item in self.items:
            self.taken += 1
            yield item


def _read(events: Iterator[pb.Event], into: queue.Queue[pb.Event]) -> None:
    with contextlib.suppress(AggregatorUnavailable):  # the test closes the link
        for event in events:
            into.put(event)


def _taken_within(counted: Counted, more_than: int, seconds: float) -> int:
    until = time.monotonic() + seconds
    while counted.taken <= more_than and time.monotonic() < until:
        time.sleep(0.05)
    return counted.taken


def test_an_upload_sends_its_header_then_waits_for_a_slot(tmp_path: Path) -> None:
    """Four stalled uploads hold every slot. The trainer's transport sends its header and
    nothing more until one lets go; an upload that ignores the go-ahead (an older trainer)
    pushes its chunks into the aggregator's window meanwhile."""
    doc = manifest("refusals", sites=6, rounds=1, min_sites=6, timeout=120,
                   model={"name": "mlp", "hiddenSizes": [1024, 512]})  # fmt: skip
    doc["spec"]["joinGraceSeconds"] = 0
    job = LocalJob(tmp_path, doc)
    job.aggregator_args = ["--min-transfer-rate", "0"]  # the stalled keep their slots
    release = threading.Event()
    link = GrpcLink(f"127.0.0.1:{job.port}")
    try:
        job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running", timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{job.port}") as channel:
            stub = pb_grpc.AggregatorStub(channel)
            streams = [FakeSiteStream(stub, f"site-{i}") for i in (0, 1, 2, 3, 5)]
            events: queue.Queue[pb.Event] = queue.Queue()
            join = pb.JoinRequest(job="refusals", site="site-4", protocol_version=PROTOCOL_VERSION)
            subscription = link.subscribe(join)
            threading.Thread(target=_read, args=(subscription, events), daemon=True).start()
            assert events.get(timeout=60).task.ref.round == 1
            assert link.go_ahead  # said at Subscribe
            _, model = fetch(stub)
            assert sum(v.nbytes for v in model.values()) > 2 << 20  # three chunks and more
            holders = []
            for i in range(4):
                update = parts(model, site=f"site-{i}")
                header, chunk = next(update), next(update)
                holders.append(stub.SubmitUpdate.future(_stalled([header, chunk], release)))
            for h in holders:  # each holds a slot once it hears the go-ahead
                assert dict(h.initial_metadata())[GO_AHEAD_METADATA] == "go"

            waiting = Counted(parts(model, site="site-4"))
            done: queue.Queue[int | BaseException] = queue.Queue()

            def upload() -> None:
                try:
                    done.put(link.submit_update(waiting))
                except BaseException as e:  # handed to the test's thread
                    done.put(e)

            threading.Thread(target=upload, daemon=True).start()
            assert _taken_within(waiting, 0, 20) == 1  # its header is on its way
            eager = Counted(parts(model, site="site-5"))
            eager_call = stub.SubmitUpdate.future(iter(eager))
            # The eager upload's whole update goes into the aggregator's buffers while it waits.
            total = len(list(parts(model, site="site-5")))
            assert _taken_within(eager, total - 1, 20) == total
            assert waiting.taken == 1 and done.empty()  # the header alone

            holders[0].cancel()  # two slots free, one for each waiting upload
            holders[1].cancel()
            received = done.get(timeout=60)
            assert not isinstance(received, BaseException), received
            assert received == sum(v.nbytes for v in model.values())
            assert waiting.taken == total
            assert eager_call.result(timeout=60).ref.site == "site-5"
            release.set()
            for s in streams:
                s.call.cancel()
    finally:
        release.set()
        link.close()
        job.stop()


@pytest.fixture(scope="module")
def aggregator_without_go_ahead(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fedkube's engine as it was before the go-ahead, unpacked from git."""
    tree = engine_at(NO_GO_AHEAD_COMMIT, tmp_path_factory.mktemp("no-go-ahead"))
    code = "from fedkube.proto import compat; print(hasattr(compat, 'GO_AHEAD_METADATA'))"
    assert ask(tree, code) == "False"
    return tree


def test_trainers_upload_at_once_to_an_aggregator_that_gives_no_go_ahead(
    tmp_path: Path, aggregator_without_go_ahead: Path
) -> None:
    """A site upgraded before its aggregator: it heard no go-ahead at Subscribe, so it never
    waits for one (which would never come) and the job runs as before."""
    job = LocalJob(tmp_path, manifest("no-go-ahead", sites=3, rounds=2, min_sites=3))
    args = ["aggregator", "--manifest", str(job.path), "--host", "127.0.0.1"]
    args += ["--port", str(job.port), "--http-port", str(job.http_port)]
    args += ["--checkpoint-dir", str(tmp_path / "ck"), "--output-dir", str(job.out)]
    env = {**os.environ, "PYTHONPATH": str(aggregator_without_go_ahead)}
    try:
        job.aggregator = spawn_fedkube(
            args, job.logs / "aggregator.log", env=env, new_session=False
        )
        for site in ("site-0", "site-1", "site-2"):
            job.start_trainer(site)
        result = job.wait_done(timeout=180)
    finally:
        job.stop()
    assert result.phase == "Succeeded"
    assert [h.sites for h in result.history] == [["site-0", "site-1", "site-2"]] * 2


def test_the_upload_window_flag_names_its_range(tmp_path: Path) -> None:
    job = LocalJob(tmp_path, manifest("window", sites=1, rounds=1))
    said = subprocess.run(
        [sys.executable, "-m", "fedkube", "aggregator", "--manifest", str(job.path),
         "--upload-window", "32"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert said.returncode == 2
    assert "--upload-window: '32' is not a window in KiB from 64 to 65536" in said.stderr
