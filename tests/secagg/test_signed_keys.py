"""Signed secure-aggregation keys, at the unit level: what a site accepts in a roster entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedkube.errors import SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg import keys
from fedkube.secagg.keys import Context
from fedkube.secagg.signed_keys import SigningIdentity
from fedkube.security.certs import Authority, create_consortium, issue_site

CONTEXT = Context("job", 3, 1)


def _entry(identity: SigningIdentity, site: str) -> pb.SiteKeys:
    message = pb.KeyAdvertisement(
        ref=CONTEXT.ref(site),
        share_public_key=keys.public_bytes(keys.new_private_key()),
        mask_public_key=keys.public_bytes(keys.new_private_key()),
        num_samples=12,
    )
    identity.sign(message, CONTEXT)
    return pb.SiteKeys(
        site=site,
        index=1,
        share_public_key=message.share_public_key,
        mask_public_key=message.mask_public_key,
        num_samples=message.num_samples,
        certificate=message.certificate,
        signature=message.signature,
    )


def test_a_certificate_of_another_consortium_from_the_same_ca_is_refused(tmp_path: Path) -> None:
    """One CA serving two consortia: a job that names its consortium takes only its own."""
    ca = create_consortium(tmp_path / "ours", "ours", ["site-0", "site-1"], ["127.0.0.1"])
    issue_site(Authority(ca.cert, ca.key, "theirs"), tmp_path / "theirs" / "site-1", "site-1")
    (tmp_path / "theirs" / "site-1" / "ca.crt").write_bytes(
        (tmp_path / "ours" / "ca" / "ca.crt").read_bytes()
    )
    mine = SigningIdentity.from_folder(tmp_path / "ours" / "sites" / "site-0", "ours")
    ours = SigningIdentity.from_folder(tmp_path / "ours" / "sites" / "site-1")
    theirs = SigningIdentity.from_folder(tmp_path / "theirs" / "site-1")
    mine.check(_entry(ours, "site-1"), CONTEXT)  # the consortium's own: accepted
    with pytest.raises(SecureAggregationError, match="of consortium 'theirs', not this job's"):
        mine.check(_entry(theirs, "site-1"), CONTEXT)
    # Without a consortium named, the CA alone decides (both pass).
    SigningIdentity.from_folder(tmp_path / "ours" / "sites" / "site-0").check(
        _entry(theirs, "site-1"), CONTEXT
    )


def test_a_signature_from_another_round_or_try_is_refused(tmp_path: Path) -> None:
    create_consortium(tmp_path, "ours", ["site-0", "site-1"], ["127.0.0.1"])
    mine = SigningIdentity.from_folder(tmp_path / "sites" / "site-0")
    entry = _entry(SigningIdentity.from_folder(tmp_path / "sites" / "site-1"), "site-1")
    for replayed in (Context("job", 4, 1), Context("job", 3, 2), Context("other", 3, 1)):
        with pytest.raises(SecureAggregationError, match="do not match their signature"):
            mine.check(entry, replayed)


def test_keys_signed_with_a_revoked_certificate_are_refused(tmp_path: Path) -> None:
    """A hostile aggregator cannot seat a revoked site (whose key may be anyone's now) in a
    roster: each site checks entries against its own copy of ca.crl."""
    import shutil

    from fedkube.security.revocation import CRL_FILE, revoke

    create_consortium(tmp_path, "ours", ["site-0", "site-1"], ["127.0.0.1"])
    entry = _entry(SigningIdentity.from_folder(tmp_path / "sites" / "site-1"), "site-1")
    SigningIdentity.from_folder(tmp_path / "sites" / "site-0").check(entry, CONTEXT)
    ca = tmp_path / "ca"
    serial = revoke(ca / "ca.crt", ca / "ca.key", tmp_path / "sites/site-1/tls.crt", ca / CRL_FILE)
    shutil.copy(ca / CRL_FILE, tmp_path / "sites" / "site-0" / CRL_FILE)
    with pytest.raises(SecureAggregationError, match=f"serial {serial:x}, which the consortium"):
        SigningIdentity.from_folder(tmp_path / "sites" / "site-0").check(entry, CONTEXT)
