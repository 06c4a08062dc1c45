"""A site that will not answer a task says so, and why (``DeclineTask``): the aggregator stops
waiting for it, and a round the other sites cannot carry ends at once with the site's reason
instead of at its deadline. Real aggregator and trainer processes, real gRPC on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import yaml
from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.declines import MAX_REASON_CHARS, clean_reason
from fedkube.errors import RoundClosed
from fedkube.models.plugins import PluginPolicy
from fedkube.models.registry import initial_params
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.spec import parse_job
from fedkube.strategy import build_strategy
from fedkube.testing import LocalJob, manifest
from fedkube.transport.grpc_link import GrpcLink
from fedkube.transport.inprocess import InProcessLink

from tests.support.site_files import file_job, write_site_files
from tests.support.wire import FakeSiteStream

# Far longer than any test waits: a round that ended, ended on a decline.
ROUND_TIMEOUT = 300


def secure_job(name: str, min_sites: int, rounds: int = 2) -> dict:
    doc = manifest(name, sites=3, rounds=rounds, min_sites=min_sites, timeout=ROUND_TIMEOUT)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    doc["spec"]["joinGraceSeconds"] = 20
    return doc


def whole_log(job: LocalJob, name: str) -> str:
    return (job.logs / f"{name}.log").read_text(errors="replace")


def revealed_before(job: LocalJob, tmp: Path, site: str, round: int) -> None:
    """``site`` starts with a state folder saying it revealed its shares for ``round``: as
    after an aggregator that stopped mid-unmask once the site had revealed."""
    state = tmp / f"state-{site}"
    state.mkdir()
    (state / "site-guards.json").write_text(json.dumps({"revealed": [round]}))
    job.trainer_args[site] = ["--state-dir", str(state)]


@pytest.mark.slow
def test_a_round_every_site_must_answer_fails_at_once_when_one_declines_it(
    tmp_path: Path,
) -> None:
    job = LocalJob(tmp_path, secure_job("declined-all", min_sites=3))
    revealed_before(job, tmp_path, "site-2", round=1)
    log = failed_log(job)
    reason = "declined by site-2 (this site already revealed its shares for round 1)"
    assert f"round 1 did not reach minSitesPerRound=3 in 3 attempts: {reason}" in log
    assert "round 1 attempt 3: site site-2 declined stage ADVERTISE_KEYS" in log


@pytest.mark.slow
def test_round_0_fails_at_once_too_naming_the_site(tmp_path: Path) -> None:
    """A job over the sites' own files begins with round 0 (its statistics, masked here)."""
    doc = file_job(write_site_files(tmp_path / "data"), rounds=2, name="declined-round-0")
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    doc["spec"]["task"]["labels"] = ["benign", "malignant"]
    doc["spec"]["roundTimeoutSeconds"] = ROUND_TIMEOUT
    job = LocalJob(tmp_path, doc)
    revealed_before(job, tmp_path, "clinic-b", round=0)
    log = failed_log(job)
    reason = "declined by clinic-b (this site already revealed its shares for round 0)"
    assert f"the statistics round did not reach 3 sites in 3 attempts: {reason}" in log
    assert "round 0 attempt 3: too few sites answered: " + reason in log


def failed_log(job: LocalJob) -> str:
    """Run the job to its end, which must be a failure well before any round's deadline;
    the aggregator's log."""
    try:
        job.start_all()
        assert job.aggregator is not None
        code = job.aggregator.wait(120)  # not the 3 x 300 s of attempts waited out
    finally:
        job.stop()
    log = whole_log(job, "aggregator")
    assert code != 0, log
    return log


@pytest.mark.slow
def test_a_site_whose_manifest_differs_is_not_waited_for_and_named(tmp_path: Path) -> None:
    """site-2's copy of the manifest agreed another threshold: it declines every secure task,
    naming the field, and the other two carry the rounds without waiting for it."""
    doc = secure_job("declined-some", min_sites=2)
    job = LocalJob(tmp_path, doc)
    other = json.loads(json.dumps(doc))
    other["spec"]["security"]["secureAggregation"]["threshold"] = 3
    theirs = tmp_path / "site-2-manifest.yaml"
    theirs.write_text(yaml.safe_dump(other))
    job.trainer_args["site-2"] = ["--manifest", str(theirs)]
    try:
        job.start_all()
        result = job.wait_done(timeout=240)
    finally:
        job.stop()
    assert [h.round for h in result.history] == [1, 2]
    for h in result.history:
        assert h.sites == ["site-0", "site-1"]
        assert h.duration_seconds < ROUND_TIMEOUT / 4, f"a round waited for site-2: {h}"
    log = whole_log(job, "aggregator")
    assert "site site-2 declined stage ADVERTISE_KEYS: the task's secure-aggregation" in log
    assert "differ from this site's manifest in threshold" in log


@pytest.fixture()
def plain_aggregator(tmp_path: Path) -> Iterator[LocalJob]:
    doc = manifest("refusals", sites=2, rounds=2, min_sites=2, timeout=ROUND_TIMEOUT)
    doc["spec"]["joinGraceSeconds"] = 0.5
    job = LocalJob(tmp_path, doc)
    job.start_aggregator()
    job.wait_for(lambda p: p.phase == "Running", timeout=60)
    yield job
    job.stop()


def test_the_aggregator_takes_a_decline_only_for_the_stage_it_asked(
    plain_aggregator: LocalJob,
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{plain_aggregator.port}")
    stub = pb_grpc.AggregatorStub(channel)
    site0, site1 = FakeSiteStream(stub, "site-0"), FakeSiteStream(stub, "site-1")
    task = site0.next_task()
    assert (task.ref.round, task.ref.attempt, task.stage) == (1, 1, pb.TRAIN)
    site1.next_task()

    def decline(site: str, stage: pb.Stage = pb.TRAIN, attempt: int = 1, why: str = "no") -> None:
        ref = pb.RoundRef(job="refusals", round=1, attempt=attempt, site=site)
        stub.DeclineTask(pb.Decline(ref=ref, stage=stage, reason=why), timeout=30)

    with pytest.raises(grpc.RpcError) as e:
        decline("site-0", stage=pb.UNMASK)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "round 1 (attempt 1) is not at stage UNMASK; the decline is dropped" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        decline("intruder")
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

    started = time.monotonic()
    decline("site-0", why="the data steward\nsaid no\x1b[31m " + "x" * 2000)
    # Two sites needed, one declined: attempt 2 comes at once, not after 300 s.
    again = site0.next_task()
    assert (again.ref.round, again.ref.attempt) == (1, 2)
    assert time.monotonic() - started < ROUND_TIMEOUT / 4
    with pytest.raises(grpc.RpcError) as e:
        decline("site-0", attempt=1)  # the attempt it named is over
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    log = whole_log(plain_aggregator, "aggregator")
    assert "site site-0 declined stage TRAIN: the data steward said no [31m xxx" in log
    assert "declined by site-0 (the data steward said no" in log
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{plain_aggregator.http_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    declines = 'fedkube_site_declines_total{fedjob="refusals",fedjob_namespace="local",site='
    assert declines + '"site-0"} 1.0' in metrics and declines + '"site-1"} 0.0' in metrics
    channel.close()


def test_a_reason_is_one_printable_line_of_bounded_length() -> None:
    assert clean_reason("a\nb\tc\x00d  e") == "a b c d e"
    assert clean_reason("\n \x07") == "no reason given"
    long = clean_reason("y" * 5000)
    assert len(long) == MAX_REASON_CHARS and long.endswith("...")


def test_an_aggregator_without_declines_is_waited_for_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An aggregator of an earlier release has no DeclineTask: the site's decline is not an
    error (gRPC answers UNIMPLEMENTED), it just waits."""
    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    link = GrpcLink(f"127.0.0.1:{port}")
    try:
        with caplog.at_level(logging.INFO, logger="fedkube.transport"):
            link.decline_task(pb.Decline(ref=pb.RoundRef(job="j", round=1, site="s")))
    finally:
        link.close()
        server.stop(0)
    assert "the aggregator takes no declines (an earlier release)" in caplog.text


async def cancel_all() -> None:
    """Stop the round engine's tasks on its own loop, so that none is left pending."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def test_a_decline_over_the_in_process_link_ends_the_attempt() -> None:
    """`fedkube run`'s transport carries declines to the same round engine."""
    doc = manifest("in-process", sites=2, rounds=1, min_sites=2, timeout=ROUND_TIMEOUT)
    doc["spec"]["joinGraceSeconds"] = 0.5
    job = parse_job(doc)
    features, classes = job.spec.input_shape()
    plugins = PluginPolicy.for_local(job.spec.task, None)
    first = initial_params(job.spec.task, features, classes, plugins)
    coordinator = Coordinator(job, first, build_strategy(job.spec), None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(coordinator.run(), loop)
    try:
        links = [InProcessLink(coordinator, loop) for _ in range(2)]
        tasks = [
            link.subscribe(pb.JoinRequest(job="in-process", site=f"site-{i}"))
            for i, link in enumerate(links)
        ]
        first_task = next(tasks[0]).task
        next(tasks[1])
        ref = pb.RoundRef(job="in-process", round=1, attempt=1, site="site-0")
        links[0].decline_task(pb.Decline(ref=ref, stage=first_task.stage, reason="not today"))
        assert next(tasks[0]).task.ref.attempt == 2
        with pytest.raises(RoundClosed, match="is not at stage TRAIN"):
            links[0].decline_task(pb.Decline(ref=ref, stage=pb.TRAIN, reason="late"))
    finally:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(10)
        assert running.cancelled()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
