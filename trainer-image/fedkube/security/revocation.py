"""Revoked certificates: the consortium's certificate revocation list (CRL), signed by its CA.

A site that leaves the consortium, or whose key leaked, is revoked with
`fedkube certs revoke`, which signs a CRL (ca.crl). The aggregator reads it from its TLS folder
(a key of its Secret) and refuses every connection whose certificate's serial it lists; it
reads the file again when it changes, so a Secret update takes effect without a restart.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedkube.errors import TlsError

CRL_FILE = "ca.crl"


def revoke(ca_cert: Path, ca_key: Path, certificate: Path, crl: Path, days: int = 30) -> int:
    """Adds ``certificate`` to the CRL at ``crl`` (made when missing), signed by the CA;
    returns the revoked serial. The CRL says when a newer one is due (``days``)."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{ca_key}: not the consortium CA's EC private key")
    leaf = x509.load_pem_x509_certificate(certificate.read_bytes())
    if leaf.issuer != ca.subject:
        raise TlsError(f"{certificate} was not issued by the CA in {ca_cert}")
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=days))
    )
    earlier = list(_load(crl, ca)) if crl.exists() else []
    for entry in earlier:
        builder = builder.add_revoked_certificate(entry)
    if leaf.serial_number not in {e.serial_number for e in earlier}:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(leaf.serial_number)
            .revocation_date(now)
            .build()
        )
    signed = builder.sign(key, hashes.SHA256())
    tmp = crl.with_name(crl.name + ".tmp")
    tmp.write_bytes(signed.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, crl)  # never a half-written list
    return leaf.serial_number


def _load(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as e:
        raise TlsError(f"{path}: not a readable PEM certificate revocation list ({e})") from None
    public = ca.public_key()
    if crl.issuer != ca.subject or not (
        isinstance(public, ec.EllipticCurvePublicKey) and crl.is_signature_valid(public)
    ):
        raise TlsError(
            f"{path}: this revocation list is not signed by the CA in the same folder; make it "
            "with `fedkube certs revoke` and the consortium's CA"
        )
    return crl


@dataclass
class Revocations:
    """The revoked serials in ``folder``/ca.crl, if any, re-read when the file changes."""

    folder: Path
    _stamp: float | None = None
    _serials: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self._refresh()  # a bad list stops the aggregator at start, not at the first peer

    def _refresh(self) -> None:
        path = self.folder / CRL_FILE
        try:
            stamp = path.stat().st_mtime
        except FileNotFoundError:
            self._stamp, self._serials = None, frozenset()
            return
        if stamp == self._stamp:
            return
        from fedkube.security.certs import CA_FILE

        ca = x509.load_pem_x509_certificate((self.folder / CA_FILE).read_bytes())
        self._serials = frozenset(e.serial_number for e in _load(path, ca))
        self._stamp = stamp

    def revoked(self, certificate: x509.Certificate) -> int | None:
        """The certificate's serial when the consortium revoked it; else None."""
        self._refresh()
        serial = certificate.serial_number
        return serial if serial in self._serials else None
