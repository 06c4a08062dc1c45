"""Secure aggregation's keys, signed with each site's mutual-TLS key and checked by every other.

Without signatures an active aggregator can hand each site keys of its own in a peer's place
(key substitution), agree every pairwise mask itself and unmask any single update. With mutual
TLS each site holds a certificate from the consortium CA: it signs its two public keys, its
sample count, the job, round and try with that certificate's key, and every site checks every
roster entry before it shares anything: the certificate comes from the CA, names the entry's
site, and its key signed exactly these values. The aggregator relays the signatures; it
cannot make them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedkube.errors import SecureAggregationError, TlsError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.keys import Context
from fedkube.security.certs import CA_FILE, CERT_FILE, KEY_FILE
from fedkube.security.peer_certificates import CertificateRefused, checked_certificate, signed_with
from fedkube.security.revocation import Revocations

_DOMAIN = b"fedkube/secagg/v1/site-keys\x00"
_SURVIVORS = b"fedkube/secagg/v1/survivors\x00"


def signed_bytes(
    context: Context, site: str, share_key: bytes, mask_key: bytes, num_samples: int
) -> bytes:
    """What a site signs: unambiguous (every field length-prefixed), bound to the job, the
    round and the try, so no signature serves another."""
    fields = [context.job.encode(), site.encode(), share_key, mask_key]
    packed = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return _DOMAIN + packed + struct.pack(">qqq", context.round, context.attempt, num_samples)


def survivors_bytes(context: Context, survivors: list[str], model: bytes = b"") -> bytes:
    """What a site signs in the consistency stage: the round's survivors, in name order, and
    the digest of the model it trained or scored (none in round 0), so that sites served
    different models cannot agree."""
    names = [context.job, *sorted(survivors)]
    packed = b"".join(struct.pack(">I", len(n.encode())) + n.encode() for n in names)
    bound = struct.pack(">I", len(model)) + model
    return _SURVIVORS + packed + struct.pack(">qq", context.round, context.attempt) + bound


@dataclass(frozen=True)
class SigningIdentity:
    """A site's certificate and key (its TLS folder), and the consortium CA it checks with."""

    certificate_pem: bytes
    key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    # The consortium every roster certificate must name (the job's mutualTls.consortium).
    consortium: str | None = None
    # The site's copy of the consortium's revocation list (ca.crl in its TLS folder).
    revocations: Revocations | None = None

    @classmethod
    def from_folder(cls, folder: Path, consortium: str | None = None) -> SigningIdentity:
        try:
            ca = x509.load_pem_x509_certificate((folder / CA_FILE).read_bytes())
            cert = (folder / CERT_FILE).read_bytes()
            key = serialization.load_pem_private_key((folder / KEY_FILE).read_bytes(), None)
        except (OSError, ValueError) as e:
            raise TlsError(f"TLS folder {folder}: cannot load the key and CA ({e})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"TLS folder {folder}: {KEY_FILE} is not an EC key (`fedkube certs`)")
        return cls(cert, key, ca, consortium, Revocations(folder))

    def sign(self, message: pb.KeyAdvertisement, context: Context) -> None:
        """Signs ``message`` in place (its keys, sample count, job, round, try)."""
        data = signed_bytes(
            context,
            message.ref.site,
            message.share_public_key,
            message.mask_public_key,
            message.num_samples,
        )
        message.certificate = self.certificate_pem
        message.signature = self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def sign_bytes(self, data: bytes) -> bytes:
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def check(self, entry: pb.SiteKeys, context: Context) -> None:
        """Refuses a roster entry that its site did not sign, with a certificate from the CA
        that names it."""
        where = f"the roster's keys for site {entry.site!r}"
        if not entry.certificate or not entry.signature:
            raise SecureAggregationError(
                f"{where} are not signed: under mutual TLS every site signs its keys; the "
                "aggregator may have put keys of its own in their place. Not answered"
            )
        try:
            cert = checked_certificate(
                entry.certificate, self.ca, self.revocations, self.consortium
            )
        except CertificateRefused as e:
            raise SecureAggregationError(f"{where} come with {e}: not answered") from None
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [entry.site]:
            raise SecureAggregationError(
                f"{where} are signed with the certificate of {names!r}: key substitution, "
                "not answered"
            )
        data = signed_bytes(
            context, entry.site, entry.share_public_key, entry.mask_public_key, entry.num_samples
        )
        if not signed_with(cert, entry.signature, data):
            raise SecureAggregationError(
                f"{where} do not match their signature (other keys, sample count, round or "
                "try than the site signed): key substitution, not answered"
            )


def signed_by(entry: pb.SiteKeys, data: bytes, signature: bytes) -> bool:
    """Whether the site of ``entry`` (whose certificate ``check`` accepted) signed ``data``."""
    return signed_with(x509.load_pem_x509_certificate(entry.certificate), signature, data)
