"""Mutual TLS: only the job's sites, each known by its own certificate, reach the aggregator."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from fedkube.cli.launch import free_port
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.security.certs import create_consortium
from fedkube.security.tls import channel_credentials
from fedkube.testing import LocalJob, manifest
from fedkube.transport.progress_client import fetch_progress

from tests.support.cli import fedkube_cli


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedkube",
            "certs",
            "--out",
            str(root / "ours"),
            "--sites",
            "site-0,site-1,site-9",
            "--aggregator-host",
            "localhost,127.0.0.1",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    create_consortium(root / "theirs", "another", ["site-0"], ["localhost", "127.0.0.1"])
    return root


@pytest.fixture(scope="module")
def secured(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJob]:
    tmp = tmp_path_factory.mktemp("mtls")
    job = LocalJob(tmp, manifest("mtls", sites=2, rounds=2, min_sites=2, joinGraceSeconds=60))
    job.aggregator_args = ["--tls-dir", str(pki / "ours" / "aggregator")]
    job.start_aggregator()
    job.wait_for(lambda p: p.phase == "Running", timeout=60)
    yield job
    job.stop()


def subscribe(
    job: LocalJob, credentials: grpc.ChannelCredentials | None, site: str
) -> grpc.RpcError | pb.Event:
    target = f"127.0.0.1:{job.port}"
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        stub = pb_grpc.AggregatorStub(channel)
        try:
            return next(
                iter(
                    stub.Subscribe(
                        pb.JoinRequest(job="mtls", site=site, protocol_version=PROTOCOL_VERSION),
                        timeout=10,
                    )
                )
            )
        except grpc.RpcError as e:
            return e


def test_a_trainer_without_a_certificate_is_refused(secured: LocalJob) -> None:
    e = subscribe(secured, None, "site-0")
    assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(secured: LocalJob, pki: Path) -> None:
    e = subscribe(secured, channel_credentials(pki / "theirs" / "sites" / "site-0"), "site-0")
    assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE


def test_a_valid_certificate_for_a_site_not_in_the_job_is_refused(
    secured: LocalJob, pki: Path
) -> None:
    e = subscribe(secured, channel_credentials(pki / "ours" / "sites" / "site-9"), "site-9")
    assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "site 'site-9' is not a site of job 'mtls'" in e.details()


def test_no_site_can_act_in_another_sites_name(secured: LocalJob, pki: Path) -> None:
    creds = channel_credentials(pki / "ours" / "sites" / "site-0")
    e = subscribe(secured, creds, "site-1")
    assert isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "certificate is for 'site-0'; it cannot act for site 'site-1'" in e.details()
    with grpc.secure_channel(f"127.0.0.1:{secured.port}", creds) as channel:
        stub = pb_grpc.AggregatorStub(channel)
        header = pb.UpdatePart(
            header=pb.UpdateHeader(
                ref=pb.RoundRef(job="mtls", round=1, site="site-1"), num_samples=1
            )
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitUpdate(iter([header]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            stub.ReportEvaluation(
                pb.Evaluation(ref=pb.RoundRef(job="mtls", site="site-1"), num_samples=1)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_sites_own_certificates_train_the_job(secured: LocalJob, pki: Path) -> None:
    for site in ("site-0", "site-1"):
        secured.trainer_args[site] = ["--tls-dir", str(pki / "ours" / "sites" / site)]
        secured.start_trainer(site)
    result = secured.wait_done(timeout=120)
    assert result.rounds_completed == 2
    assert all(h.sites == ["site-0", "site-1"] for h in result.history)


def test_clear_text_away_from_loopback_must_be_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    import yaml

    path.write_text(yaml.safe_dump(manifest("open")))
    out = fedkube_cli(
        [
            *("aggregator", "--manifest", str(path), "--host", "0.0.0.0", "--port", "0"),
            *("--http-port", "0", "--output-dir", str(tmp_path / "o")),
            *("--checkpoint-dir", str(tmp_path / "c")),
        ],
        timeout=120,
    )
    assert out.returncode == 1
    assert "would listen on 0.0.0.0 in clear text" in out.stderr


def test_a_trainer_refuses_clear_text_toward_a_non_loopback_aggregator(tmp_path: Path) -> None:
    """Refused before any connection is tried (the name does not even resolve)."""
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(manifest("open")))
    out = fedkube_cli(
        [
            *("trainer", "--manifest", str(path), "--site", "site-0"),
            *("--aggregator", "aggregator.hospitals.invalid:7070"),
        ],
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert "would send its updates to aggregator.hospitals.invalid:7070 in clear text" in (
        out.stderr
    )


def test_private_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    import os
    import stat

    create_consortium(tmp_path, "hospitals", ["site-0"], ["localhost"])
    for key in [tmp_path / "ca" / "ca.key", *tmp_path.glob("**/tls.key")]:
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key


def test_a_revoked_certificate_is_refused_and_the_list_is_read_again_when_it_changes(
    tmp_path: Path,
) -> None:
    """`fedkube revoke` signs the consortium's CRL; the aggregator, given it as ca.crl in its
    TLS folder, refuses that certificate, first at start and then as the file changes."""
    import shutil

    from fedkube.security.revocation import CRL_FILE

    pki = tmp_path / "pki"
    create_consortium(pki, "ours", ["site-0", "site-1"], ["localhost", "127.0.0.1"])
    job = LocalJob(tmp_path, manifest("mtls", sites=2, rounds=2, min_sites=1, joinGraceSeconds=0))
    agg_tls = tmp_path / "aggregator-tls"
    shutil.copytree(pki / "aggregator", agg_tls)
    revoked = fedkube_cli(
        ["revoke", "--ca-dir", str(pki / "ca"), "--cert", str(pki / "sites/site-1/tls.crt")]
    )
    assert revoked.returncode == 0, revoked.stderr
    shutil.copy(pki / "ca" / CRL_FILE, agg_tls / CRL_FILE)
    job.aggregator_args = ["--tls-dir", str(agg_tls)]
    job.start_aggregator()
    try:
        job.wait_for(lambda p: p.phase == "Running", timeout=60)
        site0 = channel_credentials(pki / "sites" / "site-0")
        site1 = channel_credentials(pki / "sites" / "site-1")
        refused = subscribe(job, site1, "site-1")
        assert isinstance(refused, grpc.RpcError)
        assert "is revoked by the consortium's list (ca.crl)" in (refused.details() or "")
        assert isinstance(subscribe(job, site0, "site-0"), pb.Event)
        # Revoking site-0 too: the aggregator reads the new list (a Secret update) at once.
        again = fedkube_cli(
            ["revoke", "--ca-dir", str(pki / "ca"), "--cert", str(pki / "sites/site-0/tls.crt")]
        )
        assert again.returncode == 0, again.stderr
        shutil.copy(pki / "ca" / CRL_FILE, agg_tls / CRL_FILE)
        refused = subscribe(job, site0, "site-0")
        assert isinstance(refused, grpc.RpcError)
        assert "revoked" in (refused.details() or "")
    finally:
        job.stop()


def test_a_revocation_list_not_signed_by_the_ca_stops_the_aggregator(tmp_path: Path) -> None:
    import shutil

    from fedkube.security.revocation import CRL_FILE

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    create_consortium(ours, "ours", ["site-0"], ["127.0.0.1"])
    create_consortium(theirs, "theirs", ["site-0"], ["127.0.0.1"])
    made = fedkube_cli(
        ["revoke", "--ca-dir", str(theirs / "ca"), "--cert", str(theirs / "sites/site-0/tls.crt")]
    )
    assert made.returncode == 0, made.stderr
    shutil.copy(theirs / "ca" / CRL_FILE, ours / "aggregator" / CRL_FILE)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(manifest("crl-bad", sites=1, rounds=1)))
    out = fedkube_cli(
        ["aggregator", "--manifest", str(path), "--tls-dir", str(ours / "aggregator"),
         "--port", "0"], timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "ca.crl: this revocation list is not signed by the CA in the same folder" in out.stderr
    # And a certificate from another CA cannot be revoked with ours.
    wrong = fedkube_cli(
        ["revoke", "--ca-dir", str(ours / "ca"), "--cert", str(theirs / "sites/site-0/tls.crt")]
    )
    assert wrong.returncode != 0 and "was not issued by the CA" in wrong.stderr


def test_secure_aggregation_under_mutual_tls_signs_keys_and_checks_survivors(
    tmp_path: Path,
) -> None:
    """Real processes: each site signs its keys with its certificate and checks everyone's;
    each round runs the consistency stage (survivors sign the list) before unmasking."""
    sites = ["site-0", "site-1", "site-2"]
    pki = tmp_path / "pki"
    create_consortium(pki, "ours", sites, ["127.0.0.1"])
    doc = manifest("mtls-secure", sites=3, rounds=3, min_sites=3, joinGraceSeconds=60)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    job = LocalJob(tmp_path, doc)
    # Both linger after the job as the operator runs them (the aggregator for its operator,
    # the relay for the other cluster's): a job of three small rounds can end within a
    # second, between two of the relay's fetches, and the relay then serves its last word.
    job.aggregator_args = ["--tls-dir", str(pki / "aggregator"), "--linger-seconds", "5"]
    for site in sites:
        job.trainer_args[site] = ["--tls-dir", str(pki / "sites" / site)]
    # site-0 also relays the job's progress, asked over its mutual-TLS channel (what a
    # trainer does for its operator when the aggregator is at another organisation).
    relay = free_port()
    job.trainer_args["site-0"] += [
        "--progress-port", str(relay), "--progress-linger-seconds", "30"
    ]  # fmt: skip
    try:
        job.start_all()
        relayed = None
        end = time.monotonic() + 120
        while relayed is None:
            assert time.monotonic() < end, job.log("site-0")
            relayed = fetch_progress(f"http://127.0.0.1:{relay}/progress") or relayed
            time.sleep(0.2)
        assert relayed.job == "mtls-secure" and relayed.total_rounds == 3
        result = job.wait_done(timeout=240)
    finally:
        job.stop()
    assert result.rounds_completed == 3
    assert all(h.sites == sites for h in result.history)
    for record in result.history:
        assert record.secure_aggregation is not None
        # Every round had its survivors sign their list before anyone revealed a share.
        assert "CONSISTENCY" in record.secure_aggregation.stage_seconds, record


def test_a_certificate_of_another_consortium_is_refused_when_the_job_names_its_own(
    tmp_path: Path,
) -> None:
    from fedkube.security.certs import Authority, issue_site

    pki = tmp_path / "pki"
    ca = create_consortium(pki, "ours", ["site-0"], ["127.0.0.1"])
    issue_site(Authority(ca.cert, ca.key, "theirs"), pki / "theirs" / "site-0", "site-0")
    (pki / "theirs" / "site-0" / "ca.crt").write_bytes((pki / "ca" / "ca.crt").read_bytes())
    doc = manifest("mtls", sites=1, rounds=2, min_sites=1, joinGraceSeconds=0)
    doc["spec"]["security"] = {"mutualTls": {"consortium": "ours"}}
    job = LocalJob(tmp_path, doc)
    job.aggregator_args = ["--tls-dir", str(pki / "aggregator")]
    job.start_aggregator()
    try:
        job.wait_for(lambda p: p.phase == "Running", timeout=60)
        refused = subscribe(job, channel_credentials(pki / "theirs" / "site-0"), "site-0")
        assert isinstance(refused, grpc.RpcError)
        assert "is for consortium 'theirs', not this job's ('ours')" in (refused.details() or "")
        assert isinstance(subscribe(job, channel_credentials(pki / "sites" / "site-0"), "site-0"),
                          pb.Event)  # fmt: skip
    finally:
        job.stop()


def test_a_trainer_refuses_an_aggregator_whose_certificate_its_list_revokes(
    tmp_path: Path,
) -> None:
    """The aggregator's key leaked and the consortium revoked its certificate; whoever holds
    the key still serves with it (here: the aggregator, its folder without the list). gRPC
    cannot check a list for a client, so each site has the aggregator sign a fresh nonce and
    checks the certificate against its own ca.crl: the site with the list refuses, naming
    the serial; the site without it trains."""
    import shutil

    from fedkube.security.revocation import CRL_FILE

    pki = tmp_path / "pki"
    create_consortium(pki, "ours", ["site-0", "site-1"], ["localhost", "127.0.0.1"])
    revoked = fedkube_cli(
        ["revoke", "--ca-dir", str(pki / "ca"), "--cert", str(pki / "aggregator/tls.crt")]
    )
    assert revoked.returncode == 0, revoked.stderr
    careful = tmp_path / "site-0-tls"
    shutil.copytree(pki / "sites" / "site-0", careful)
    shutil.copy(pki / "ca" / CRL_FILE, careful / CRL_FILE)
    job = LocalJob(tmp_path, manifest("mtls", sites=2, rounds=1, min_sites=1, joinGraceSeconds=5))
    job.aggregator_args = ["--tls-dir", str(pki / "aggregator")]
    job.trainer_args["site-0"] = ["--tls-dir", str(careful)]
    job.trainer_args["site-1"] = ["--tls-dir", str(pki / "sites" / "site-1")]
    try:
        job.start_all()
        code = job.trainers["site-0"].wait(150)  # two cores shared with the builds in CI
        result = job.wait_done(timeout=120)
    finally:
        job.stop()
    serial = revoked.stdout.split()[2]  # "revoked serial <hex> (...)"
    assert code != 0
    assert f"certificate serial {serial}, which the consortium revoked" in job.log("site-0")
    assert result.rounds_completed == 1
    assert all(h.sites == ["site-1"] for h in result.history)


def test_an_aggregators_proof_is_checked_in_full(pki: Path) -> None:
    """The proof holds only with the right nonce, job and site, a server certificate for the
    host dialled, and the job's consortium."""
    from fedkube.errors import TlsError
    from fedkube.security.aggregator_identity import (
        AggregatorCheck,
        AggregatorIdentity,
        new_nonce,
    )

    ours = pki / "ours"
    aggregator = AggregatorIdentity.from_folder(ours / "aggregator")
    check = AggregatorCheck(ours / "sites" / "site-0", "127.0.0.1")
    nonce = new_nonce()
    certificate, signature = aggregator.prove("mtls", "site-0", nonce)
    check.check("mtls", "site-0", nonce, certificate, signature)  # holds
    for job, site, other in [("mtls", "site-0", new_nonce()), ("x", "site-0", nonce)]:
        with pytest.raises(TlsError, match="did not sign this site's challenge"):
            check.check(job, site, other, certificate, signature)
    site_key = AggregatorIdentity.from_folder(ours / "sites" / "site-1")
    certificate, signature = site_key.prove("mtls", "site-0", nonce)
    with pytest.raises(TlsError, match="not a server certificate"):
        check.check("mtls", "site-0", nonce, certificate, signature)
    elsewhere = AggregatorCheck(ours / "sites" / "site-0", "aggregator.example.org")
    certificate, signature = aggregator.prove("mtls", "site-0", nonce)
    with pytest.raises(TlsError, match="not a server certificate"):
        elsewhere.check("mtls", "site-0", nonce, certificate, signature)
    named = AggregatorCheck(ours / "sites" / "site-0", "127.0.0.1", consortium="another")
    with pytest.raises(TlsError, match="of consortium"):
        named.check("mtls", "site-0", nonce, certificate, signature)
    theirs = AggregatorIdentity.from_folder(pki / "theirs" / "aggregator")
    certificate, signature = theirs.prove("mtls", "site-0", nonce)
    with pytest.raises(TlsError, match="CA did not issue"):
        check.check("mtls", "site-0", nonce, certificate, signature)
