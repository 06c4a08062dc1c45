"""Checking a certificate another party presents inside a message (not in the TLS handshake):
a site's signed secure-aggregation keys, the aggregator's identity proof. Each caller says in
its own words what it refuses; the checks and their reasons are the same."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fedkube.security.certs import consortium_of
from fedkube.security.revocation import Revocations


class CertificateRefused(ValueError):
    """Why a presented certificate is refused, as a phrase: 'an expired certificate'."""


def checked_certificate(
    pem: bytes,
    ca: x509.Certificate,
    revocations: Revocations | None,
    consortium: str | None,
) -> x509.Certificate:
    """The certificate, when the consortium CA issued it, it is in date, the consortium's
    list does not revoke it and it names the job's consortium (when the job names one).
    Raises CertificateRefused otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused("a certificate the consortium CA did not issue") from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateRefused("an expired certificate")
    serial = revocations.revoked(cert) if revocations is not None else None
    if serial is not None:
        raise CertificateRefused(
            f"certificate serial {serial:x}, which the consortium revoked (ca.crl)"
        )
    named = consortium_of(cert)
    if consortium is not None and named != consortium:
        raise CertificateRefused(
            f"a certificate of consortium {named!r}, not this job's ({consortium!r})"
        )
    return cert


def signed_with(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """Whether the certificate's (EC) key made this ECDSA-SHA256 signature over ``data``."""
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
