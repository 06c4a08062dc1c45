"""Each site's key is made at the site: `fedkube certs request` there, `fedkube certs sign` at
the consortium's CA, and a mutual-TLS job with certificates made that way (real processes)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fedkube import exit_codes
from fedkube.security.certs import ca_fingerprint, create_consortium
from fedkube.testing import LocalJob, manifest

from tests.support.cli import fedkube_cli


def certs(*args: str) -> str:
    out = fedkube_cli(["certs", *args], timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def issued(root: Path, name: str, role: str = "site", hosts: str = "") -> Path:
    """The whole round trip for one party: request at home, sign at the CA, the two public
    files back beside the key. Returns the party's TLS folder."""
    home = root / "parties" / name
    host_args = ["--aggregator-host", hosts] if hosts else []
    said = certs("request", "--name", name, "--out", str(home), *host_args)
    assert "never leaves this site" in said
    # Only the request travels: the CA sees a copy of it, never the key.
    inbox = root / "ca-inbox" / f"{name}.csr"
    inbox.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(home / "request.csr", inbox)
    signed = root / "ca-outbox" / name
    certs(
        "sign", str(inbox), "--ca-dir", str(root / "ca"), "--name", name, "--role", role,
        *host_args, "--out", str(signed),
    )  # fmt: skip
    for public in ("tls.crt", "ca.crt"):
        shutil.copy(signed / public, home / public)
    return home


@pytest.fixture()
def consortium(tmp_path: Path) -> Path:
    said = certs("ca", "--out", str(tmp_path / "ca"), "--consortium", "hospitals")
    assert "stays offline" in said
    return tmp_path


def test_a_site_certificate_says_what_the_ca_decided_and_its_key_never_left(
    consortium: Path,
) -> None:
    home = issued(consortium, "hospital-a")
    key = home / "tls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # No key but the CA's own anywhere on the CA's side.
    ca_side = [*(consortium / "ca").iterdir(), *(consortium / "ca-outbox").rglob("*")]
    assert not [p for p in ca_side if p.name == "tls.key"]
    cert = x509.load_pem_x509_certificate((home / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((home / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    subject = {a.oid: a.value for a in cert.subject}
    assert subject[NameOID.COMMON_NAME] == "hospital-a"
    assert subject[NameOID.ORGANIZATION_NAME] == "hospitals"
    assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "fedkube site"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_the_ca_refuses_requests_it_should_not_sign(consortium: Path) -> None:
    home = consortium / "parties" / "hospital-a"
    certs("request", "--name", "hospital-a", "--out", str(home))
    request = home / "request.csr"

    def sign(*args: str, path: Path = request) -> str:
        out = fedkube_cli(
            ["certs", "sign", str(path), "--ca-dir", str(consortium / "ca"),
             "--out", str(consortium / "out"), *args],
            timeout=60,
        )  # fmt: skip
        assert out.returncode == exit_codes.FAILED, out.stdout + out.stderr
        assert not (consortium / "out" / "tls.crt").exists()
        return out.stderr

    # Asked to sign for hospital-b: the request names hospital-a.
    assert "names 'hospital-a', and you are signing for 'hospital-b'" in sign(
        "--name", "hospital-b"
    )
    # A request altered on the way: its signature no longer matches.
    altered = consortium / "altered.csr"
    pem = request.read_text().splitlines()
    body = pem[3]
    pem[3] = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    altered.write_text("\n".join(pem) + "\n")
    said = sign("--name", "hospital-a", path=altered)
    assert "altered" in said or "not a PEM certificate signing request" in said, said
    # A site's request asking to be an aggregator for hosts the CA did not expect.
    agg = consortium / "parties" / "agg"
    certs("request", "--name", "agg.example.org", "--out", str(agg),
          "--aggregator-host", "agg.example.org,evil.example.org")  # fmt: skip
    said = sign(
        "--name", "agg.example.org", "--role", "aggregator",
        "--aggregator-host", "agg.example.org", path=agg / "request.csr",
    )  # fmt: skip
    assert "asks for hosts" in said and "evil.example.org" in said
    # A site certificate names no hosts.
    said = sign("--name", "agg.example.org", path=agg / "request.csr")
    assert "a site's name is a DNS label" in said or "names no hosts" in said
    # The CA is made once; a second would orphan every certificate of the first.
    again = fedkube_cli(["certs", "ca", "--out", str(consortium / "ca"), "--consortium", "x"])
    assert again.returncode == exit_codes.BAD_INPUT and "has its CA" in again.stderr


def test_a_mutual_tls_job_trains_with_certificates_made_at_each_site(consortium: Path) -> None:
    sites = ["site-0", "site-1"]
    folders = {s: issued(consortium, s) for s in sites}
    aggregator = issued(consortium, "127.0.0.1", "aggregator", "127.0.0.1,localhost")
    doc = manifest("made-at-home", sites=2, rounds=2, min_sites=2, joinGraceSeconds=60)
    doc["spec"]["security"] = {"mutualTls": {"consortium": "hospitals"}}
    (consortium / "job").mkdir()
    job = LocalJob(consortium / "job", doc)
    job.aggregator_args = ["--tls-dir", str(aggregator)]
    # Each site trusts only its consortium's CA (Helm site.policy.mutualTls.trustedCaSha256).
    pin = ca_fingerprint(consortium / "ca")
    for site in sites:
        job.trainer_args[site] = ["--tls-dir", str(folders[site]), "--trusted-ca-sha256", pin]
    try:
        job.start_all()
        result = job.wait_done(timeout=180)
    finally:
        job.stop()
    assert result.rounds_completed == 2
    assert all(h.sites == sites for h in result.history)


def test_a_trainer_refuses_a_tls_folder_whose_ca_its_site_did_not_pin(
    consortium: Path, tmp_path: Path
) -> None:
    """A tenant makes the site's Secret from a CA of its own: the trainer pinned to the
    consortium's CA refuses it before it connects or reads a row (exit 2: bad input)."""
    ours = ca_fingerprint(consortium / "ca")
    theirs = tmp_path / "tenant"
    create_consortium(theirs, "hospitals", ["site-0"], ["127.0.0.1"])
    doc = manifest("pinned-ca", sites=2, rounds=1)
    doc["spec"]["security"] = {"mutualTls": {}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = fedkube_cli(
        ["trainer", "--manifest", str(path), "--site", "site-0", "--aggregator", "127.0.0.1:9",
         "--tls-dir", str(theirs / "sites" / "site-0"), "--trusted-ca-sha256", ours],
        timeout=60,
    )  # fmt: skip
    assert out.returncode == exit_codes.BAD_INPUT, out.stderr
    assert "a CA (sha256 " in out.stderr and "this site does not trust" in out.stderr
    assert "site.policy.mutualTls.trustedCaSha256" in out.stderr
