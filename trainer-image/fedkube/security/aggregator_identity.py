"""The aggregator proves to each site that its certificate is one the consortium has not revoked.

Python's gRPC client checks the aggregator's certificate against the consortium CA, but can
neither consult a revocation list nor show the certificate to the application. So before it
subscribes, a site sends a fresh random nonce over its mutual-TLS channel; the aggregator
signs it, with the job and the site's name, using its certificate's key, and returns the
certificate. The site checks that certificate: issued by the CA, in date, a server
certificate for the host the site dials, of the job's consortium, and not on the site's own
copy of the consortium's revocation list (ca.crl in its TLS folder, as the aggregator keeps
one). A stolen, revoked aggregator key therefore convinces no site; to relay a fresh nonce to
the real aggregator one would also need a site certificate that is not revoked.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedkube.errors import TlsError
from fedkube.security.certs import CA_FILE, CERT_FILE, KEY_FILE
from fedkube.security.peer_certificates import CertificateRefused, checked_certificate, signed_with
from fedkube.security.revocation import Revocations

_DOMAIN = b"fedkube/aggregator-identity/v1\x00"
NONCE_BYTES = 32


def challenge_bytes(job: str, site: str, nonce: bytes) -> bytes:
    """What the aggregator signs: every field length-prefixed, so no signature serves another
    job, site or nonce."""
    fields = [job.encode(), site.encode(), nonce]
    return _DOMAIN + b"".join(struct.pack(">I", len(f)) + f for f in fields)


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


@dataclass(frozen=True)
class AggregatorIdentity:
    """The aggregator's side: its certificate and key, from its TLS folder."""

    certificate_pem: bytes
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_folder(cls, folder: Path) -> AggregatorIdentity:
        try:
            cert = (folder / CERT_FILE).read_bytes()
            key = serialization.load_pem_private_key((folder / KEY_FILE).read_bytes(), None)
        except (OSError, ValueError) as e:
            raise TlsError(
                f"TLS folder {folder}: cannot load the certificate and key ({e})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"TLS folder {folder}: {KEY_FILE} is not an EC key (`fedkube certs`)")
        return cls(cert, key)

    def prove(self, job: str, site: str, nonce: bytes) -> tuple[bytes, bytes]:
        """The certificate, and the signature over the site's challenge."""
        if len(nonce) != NONCE_BYTES:
            raise TlsError(f"an identity challenge of {len(nonce)} bytes; {NONCE_BYTES} expected")
        signature = self.key.sign(challenge_bytes(job, site, nonce), ec.ECDSA(hashes.SHA256()))
        return self.certificate_pem, signature


@dataclass
class AggregatorCheck:
    """The site's side: its CA, its copy of the revocation list, the host it dials and the
    consortium its manifest names."""

    folder: Path
    host: str
    consortium: str | None = None

    def __post_init__(self) -> None:
        try:
            self.ca = x509.load_pem_x509_certificate((self.folder / CA_FILE).read_bytes())
        except (OSError, ValueError) as e:
            raise TlsError(f"TLS folder {self.folder}: cannot load {CA_FILE} ({e})") from None
        self.revocations = Revocations(self.folder)  # a list the CA did not sign stops here

    def check(
        self, job: str, site: str, nonce: bytes, certificate: bytes, signature: bytes
    ) -> None:
        """Raises TlsError, saying what is wrong, unless the proof holds."""
        where = f"the aggregator at {self.host}"
        try:
            cert = checked_certificate(certificate, self.ca, self.revocations, self.consortium)
        except CertificateRefused as e:
            raise TlsError(
                f"{where} shows {e}: refused; it needs a certificate that holds"
            ) from None
        if not _serves(cert, self.host):
            raise TlsError(f"{where} shows a certificate that is not a server certificate for it")
        if not signed_with(cert, signature, challenge_bytes(job, site, nonce)):
            raise TlsError(
                f"{where} did not sign this site's challenge with its certificate's key: refused"
            )


def _serves(cert: x509.Certificate, host: str) -> bool:
    """A server certificate (serverAuth) whose names include ``host``."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in [n.lower() for n in names.get_values_for_type(x509.DNSName)]
    return address in names.get_values_for_type(x509.IPAddress)
