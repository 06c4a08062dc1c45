"""`fedkube certs`: a consortium CA, the aggregator's server certificate and one client
certificate per site, written in the layout of a Kubernetes TLS Secret (tls.crt, tls.key,
ca.crt) so each folder can become one Secret.

A site's identity is its certificate's common name; the aggregator takes it from the
certificate, never from the message. Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedkube.errors import TlsError

SITE_ORGANISATION = "fedkube site"
AGGREGATOR_ORGANISATION = "fedkube aggregator"
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
# What a CA key may do: sign certificates and revocation lists (and its own signatures).
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    # Named in every certificate it issues (the organisation), so that a job that names its
    # consortium (security.mutualTls.consortium) refuses another's, even from the same CA.
    consortium: str


def distinguished_name(common_name: str, organisation: str, unit: str | None = None) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            *([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)] if unit else []),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ca_fingerprint(folder: Path) -> str:
    """SHA-256 (hex) of the DER of the CA certificate in a TLS folder (its ca.crt): what a
    site pins (site.policy.mutualTls.trustedCaSha256). Also `openssl x509 -noout
    -fingerprint -sha256 -in ca.crt`, without the colons."""
    try:
        cert = x509.load_pem_x509_certificate((folder / CA_FILE).read_bytes())
    except (OSError, ValueError) as e:
        raise TlsError(f"{folder / CA_FILE}: not a readable CA certificate: {e}") from None
    return cert.fingerprint(hashes.SHA256()).hex()


def consortium_of(certificate: x509.Certificate) -> str | None:
    """The consortium a leaf certificate names (its organisation)."""
    names = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else None


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ec.EllipticCurvePublicKey
    | rsa.RSAPublicKey,
    days: int,
) -> x509.CertificateBuilder:
    """A certificate for ``key`` (its public half, or a request's public key), valid from five
    minutes ago (clocks differ) for ``days``."""
    now = datetime.datetime.now(datetime.UTC)
    public = (
        key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


CA_SUFFIX = " fedkube CA"


def new_authority(consortium: str, days: int = 3650) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = distinguished_name(f"{consortium}{CA_SUFFIX}", "fedkube consortium")
    cert = (
        certificate_builder(name, name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key, consortium)


def leaf_certificate(
    ca: Authority,
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    common_name: str,
    unit: str,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
    days: int,
) -> x509.Certificate:
    """A certificate the CA signs for ``key`` (a key made here, or a request's): an end
    entity of the consortium, in the role ``unit`` says, for ``usage``."""
    builder = (
        certificate_builder(
            distinguished_name(common_name, ca.consortium, unit), ca.cert.subject, key, days
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def _leaf(
    ca: Authority,
    common_name: str,
    unit: str,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return leaf_certificate(ca, key, common_name, unit, usage, sans, days), key


def general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """The key in PEM, in a file that is the owner's alone from its first byte (never
    written first and narrowed after, when another user could have opened it)."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_bundle(
    folder: Path, ca: Authority, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (folder / CA_FILE).write_bytes(ca.cert.public_bytes(pem))
    (folder / CERT_FILE).write_bytes(cert.public_bytes(pem))
    write_private_key(folder / KEY_FILE, key)


def issue_site(ca: Authority, folder: Path, site: str, days: int = 365) -> None:
    cert, key = _leaf(ca, site, SITE_ORGANISATION, ExtendedKeyUsageOID.CLIENT_AUTH, [], days)
    write_bundle(folder, ca, cert, key)


def issue_aggregator(ca: Authority, folder: Path, hosts: Sequence[str], days: int = 365) -> None:
    cert, key = _leaf(
        ca,
        hosts[0],
        AGGREGATOR_ORGANISATION,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [general_name(h) for h in hosts],
        days,
    )
    write_bundle(folder, ca, cert, key)


def write_authority(folder: Path, ca: Authority) -> None:
    """folder/ca.crt and folder/ca.key (the owner's alone): keep the key offline."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CA_FILE).write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    write_private_key(folder / "ca.key", ca.key)


def create_consortium(
    out: Path,
    consortium: str,
    sites: Sequence[str],
    aggregator_hosts: Sequence[str],
    days: int = 365,
) -> Authority:
    """out/ca/{ca.crt,ca.key}, out/aggregator/, out/sites/<site>/ (each a TLS Secret's files)."""
    ca = new_authority(consortium)
    write_authority(out / "ca", ca)
    issue_aggregator(ca, out / "aggregator", aggregator_hosts, days)
    for site in sites:
        issue_site(ca, out / "sites" / site, site, days)
    return ca
