"""Secure aggregation end to end: real trainer processes, real gRPC, real disconnects."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.testing import LocalJob, manifest
from safetensors.numpy import load_file

from tests.support.scripted_site import ScriptedSite


@pytest.mark.parametrize(
    "strategy", [{"name": "fedavg"}, {"name": "scaffold"}], ids=["fedavg", "scaffold"]
)
def test_secure_rounds_train_the_model_plain_rounds_do(tmp_path: Path, strategy: dict) -> None:
    """Masking changes nothing but the last bits: the model equals the plain run's (the
    in-process twin, same seeds), for FedAvg's weights and for SCAFFOLD's control variates."""
    from fedkube.simulation import simulate
    from fedkube.spec import parse_job

    plain = manifest(f"secure-{strategy['name']}", sites=4, rounds=4, min_sites=4)
    plain["spec"]["strategy"] = strategy
    secure = copy.deepcopy(plain)
    secure["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    job = LocalJob(tmp_path, secure)
    result = job.run()
    assert [h.round for h in result.history] == [1, 2, 3, 4]
    for h in result.history:
        assert len(h.sites) == 4
        assert h.secure_aggregation.revealed_by == 4
        assert h.secure_aggregation.dropped == []
        stages = h.secure_aggregation.stage_seconds
        # Round 1 exchanges keys first; later rounds open with the exchange the sites made
        # on the last round's masked updates and reveals: two exchanges, as plain has one.
        first = ["ADVERTISE_KEYS", "SHARE_KEYS"] if h.round == 1 else []
        assert set(stages) == {*first, "MASKED_UPDATE", "UNMASK"}
        assert sum(stages.values()) == pytest.approx(h.duration_seconds, abs=0.01)
    assert "masked update sent" in job.log("site-0")
    got = load_file(result.model_path)
    want = simulate(parse_job(plain)).params
    for name, value in want.items():
        # Fixed point rounds each value to 8/2^30; sums arrive in another order.
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5)
    assert result.global_.accuracy > 0.85


def test_sites_that_drop_before_and_after_masking_do_not_stop_the_round(tmp_path: Path) -> None:
    """Five sites, threshold 3: one drops after sending its key shares (its pairwise masks are
    rebuilt from the others' shares), one after sending its masked update (its self mask is
    rebuilt, and its update counts). Three real trainers reveal; the round completes."""
    doc = manifest("secure-drops", sites=5, rounds=2, min_sites=3)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    # Round 1 must open with all five: the wait ends as soon as they have joined, however
    # long a loaded machine takes to start the three trainers.
    doc["spec"]["joinGraceSeconds"] = 300
    job = LocalJob(tmp_path, doc)
    scripted: list[ScriptedSite] = []
    try:
        job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running")
        endpoint = f"127.0.0.1:{job.port}"
        scripted = [
            ScriptedSite(endpoint, "secure-drops", "site-3", 80, drop_after=pb.SHARE_KEYS),
            ScriptedSite(endpoint, "secure-drops", "site-4", 80, drop_after=pb.MASKED_UPDATE),
        ]
        for s in scripted:
            s.start()
        for name in ("site-0", "site-1", "site-2"):
            job.start_trainer(name)
        result = job.wait_done()
    finally:
        job.stop()
    for s in scripted:
        s.thread.join(10)
        assert s.error is None, s.error
    assert scripted[0].answered == [pb.ADVERTISE_KEYS, pb.SHARE_KEYS]
    assert scripted[1].answered == [pb.ADVERTISE_KEYS, pb.SHARE_KEYS, pb.MASKED_UPDATE]
    first, second = result.history
    assert first.sites == ["site-0", "site-1", "site-2", "site-4"]
    assert first.secure_aggregation.revealed_by == 3
    assert first.secure_aggregation.dropped == ["site-3"]
    assert second.sites == ["site-0", "site-1", "site-2"]
    # The three that revealed shared round 2's keys with their reveals (site-4 sent none with
    # its masked update): round 2 opened at MASKED_UPDATE among them.
    assert set(second.secure_aggregation.stage_seconds) == {"MASKED_UPDATE", "UNMASK"}
    assert "ADVERTISE_KEYS" in first.secure_aggregation.stage_seconds
    assert result.phase == "Succeeded" and result.global_.accuracy > 0.85


def test_a_site_whose_share_does_not_open_leaves_the_round_not_the_site_it_cheated(
    tmp_path: Path,
) -> None:
    """Five sites, threshold 3: site-4 (a hostile site double over real gRPC) seals a share
    that does not open for site-0 in every round. site-0 names it with its masked update and
    trains on; site-4 leaves each round, named in the record, and its pairs with the others
    come off through its mask key. Before, site-0 stopped its round and site-4 stayed in."""
    doc = manifest("secure-bad-share", sites=5, rounds=2, min_sites=3, timeout=60)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    doc["spec"]["joinGraceSeconds"] = 300
    job = LocalJob(tmp_path, doc)
    try:
        job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running")
        bad = ScriptedSite(
            f"127.0.0.1:{job.port}",
            "secure-bad-share",
            "site-4",
            80,
            drop_after=None,
            bad_shares_for=frozenset({"site-0"}),
        ).start()
        for name in ("site-0", "site-1", "site-2", "site-3"):
            job.start_trainer(name)
        result = job.wait_done()
    finally:
        job.stop()
    bad.thread.join(10)
    assert bad.error is None, bad.error
    assert result.phase == "Succeeded"
    for h in result.history:
        assert h.sites == ["site-0", "site-1", "site-2", "site-3"], h.round
        assert h.secure_aggregation.unopened_shares == {"site-0": ["site-4"]}
        assert h.secure_aggregation.excluded == ["site-4"]
        assert "site-4" in h.secure_aggregation.dropped
        assert h.secure_aggregation.revealed_by == 4
    assert "the key shares of site-4 did not open here" in job.log("site-0")
    assert result.global_.accuracy > 0.85


def test_too_few_sites_for_the_threshold_fail_the_job_with_the_reason(tmp_path: Path) -> None:
    doc = manifest("secure-few", sites=3, rounds=1, min_sites=1, timeout=2)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    doc["spec"]["joinGraceSeconds"] = 1
    job = LocalJob(tmp_path, doc)
    try:
        job.start_aggregator()
        for name in ("site-0", "site-1"):
            job.start_trainer(name)
        assert job.aggregator is not None
        started = time.monotonic()
        code = job.aggregator.wait(120)
    finally:
        job.stop()
    assert code != 0 and time.monotonic() - started < 120
    assert "the secure-aggregation threshold of 3 sites" in job.log("aggregator")


def test_messages_out_of_protocol_are_refused_with_the_reason(tmp_path: Path) -> None:
    """The test plays site-0 over real gRPC against a secure job's aggregator."""
    import grpc
    from fedkube.proto import fedkube_pb2_grpc as pb_grpc
    from fedkube.secagg.site import SiteSession

    from tests.support.wire import fetch, parts

    doc = manifest("refusals", sites=3, rounds=1, min_sites=2, timeout=60)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    doc["spec"]["joinGraceSeconds"] = 0
    job = LocalJob(tmp_path, doc)
    try:
        job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running")
        with grpc.insecure_channel(f"127.0.0.1:{job.port}") as channel:
            stub = pb_grpc.AggregatorStub(channel)
            events = stub.Subscribe(
                pb.JoinRequest(job="refusals", site="site-0", protocol_version=PROTOCOL_VERSION)
            )
            task = next(events).task
            assert task.stage == pb.ADVERTISE_KEYS and task.secure.params.threshold == 2
            version, model = fetch(stub)

            def refusal(call, request) -> grpc.RpcError:
                with pytest.raises(grpc.RpcError) as e:
                    call(request)
                return e.value

            e = refusal(stub.SubmitUpdate, parts(model, version=version))
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not open for updates" in e.details()

            session = SiteSession("refusals", "site-0", 1, task.ref.attempt, task.secure.params)
            ad = session.advertisement(version, 10)
            bad = pb.KeyAdvertisement()
            bad.CopyFrom(ad)
            bad.mask_public_key = b"short"
            e = refusal(stub.AdvertiseKeys, bad)
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "mask_public_key must be a 32-byte X25519 public key" in e.details()

            stub.AdvertiseKeys(ad)
            e = refusal(stub.AdvertiseKeys, ad)
            assert e.code() == grpc.StatusCode.ALREADY_EXISTS

            e = refusal(
                stub.ShareKeys,
                pb.KeyShares(ref=pb.RoundRef(job="refusals", round=1, attempt=1, site="site-0")),
            )
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not at secure-aggregation stage SHARE_KEYS" in e.details()

            other = pb.KeyAdvertisement()
            other.CopyFrom(ad)
            other.ref.site = "site-1"  # site-1 never subscribed: it was not tasked
            e = refusal(stub.AdvertiseKeys, other)
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "was not asked to answer stage" in e.details()
            events.cancel()
    finally:
        job.stop()


def test_a_killed_and_restarted_site_neither_stalls_a_round_nor_stays_out(
    tmp_path: Path,
) -> None:
    """The restarted process has none of its predecessor's keys: the aggregator must not put
    it in a roster on the strength of them (a round would wait for it until its deadline)."""
    import signal

    rounds = 300
    doc = manifest("secure-restart", sites=4, rounds=rounds, min_sites=3, local_epochs=5)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    job = LocalJob(tmp_path, doc)
    try:
        job.start_all()
        p = job.wait_for(lambda p: p.round >= 3 and p.open_round is not None)
        job.trainers["site-3"].send_signal(signal.SIGKILL)
        job.trainers["site-3"].wait()
        killed_in = p.open_round
        job.wait_for(lambda p: p.round >= killed_in + 2)
        job.start_trainer("site-3")
        result = job.wait_done(timeout=600)
    finally:
        job.stop()
    history = result.history
    assert [h.round for h in history] == list(range(1, rounds + 1))
    timeout = doc["spec"]["roundTimeoutSeconds"]
    slowest = max(history, key=lambda h: h.duration_seconds)
    assert slowest.duration_seconds < timeout / 2, f"a round waited for a dead site: {slowest}"
    assert "site-3" not in history[killed_in].sites  # the round after the kill
    back = [h.round for h in history if h.round > killed_in + 1 and "site-3" in h.sites]
    assert back, "site-3 never rejoined"
    assert history[-1].sites == ["site-0", "site-1", "site-2", "site-3"]
