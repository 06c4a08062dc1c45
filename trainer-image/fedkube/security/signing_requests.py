"""Certificates whose keys never leave their owner: each site (and the aggregator's host) makes
its key and a certificate signing request (CSR) at home; the consortium's CA signs requests.

    fedkube certs ca --out ca/ --consortium hospitals
        the CA, once: ca.crt for everyone, ca.key kept offline
    fedkube certs request --name hospital-a --out hospital-a/
        at the site: tls.key (never leaves) and request.csr
    fedkube certs sign --ca-dir ca/ --name hospital-a request.csr --out signed/
        at the CA: tls.crt and ca.crt, returned to the site

The CA, not the requester, decides what a certificate says: the role (site or aggregator, as
the organisational unit and extended key usage), the consortium (the organisation), and for an
aggregator the host names it may serve, which must be those the signer expects. A request is
signed only for the name the signer says it is signing for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedkube.errors import TlsError
from fedkube.security.certs import (
    AGGREGATOR_ORGANISATION,
    CA_FILE,
    CA_SUFFIX,
    CERT_FILE,
    KEY_FILE,
    SITE_ORGANISATION,
    Authority,
    general_name,
    leaf_certificate,
    write_private_key,
)

REQUEST_FILE = "request.csr"
Role = Literal["site", "aggregator"]
_SITE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def write_request(folder: Path, name: str, hosts: Sequence[str] = ()) -> Path:
    """A new key (folder/tls.key, the owner's alone) and a CSR for it (folder/request.csr)
    naming ``name`` and, for an aggregator, the ``hosts`` it serves. Returns the CSR's path:
    the only file that leaves."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(folder / KEY_FILE, key)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([general_name(h) for h in hosts]), critical=False
        )
    request = builder.sign(key, hashes.SHA256())
    path = folder / REQUEST_FILE
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return path


def load_authority(ca_dir: Path) -> Authority:
    """The consortium CA from its folder (ca.crt, ca.key)."""
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_FILE).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    except (OSError, ValueError) as e:
        raise TlsError(f"{ca_dir}: not a consortium CA's folder (ca.crt, ca.key): {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{ca_dir / 'ca.key'}: not the consortium CA's EC private key")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(names[0].value) if names else ""
    if not common.endswith(CA_SUFFIX):
        raise TlsError(f"{ca_dir / CA_FILE}: not a CA made by `fedkube certs ca`")
    return Authority(cert, key, common.removesuffix(CA_SUFFIX))


def sign_request(
    ca: Authority,
    request_pem: bytes,
    role: Role,
    name: str,
    hosts: Sequence[str] = (),
    days: int = 365,
    source: str = "the request",
) -> x509.Certificate:
    """The certificate for a checked request: signed by its own key, naming ``name`` (the one
    the signer means to certify), with a key of a strength the consortium accepts; an
    aggregator's request must name exactly ``hosts``."""
    try:
        request = x509.load_pem_x509_csr(request_pem)
    except ValueError:
        raise TlsError(f"{source}: not a PEM certificate signing request") from None
    try:
        valid = request.is_signature_valid
    except ValueError:  # a key that does not parse: damaged on the way, or made so
        valid = False
    if not valid:
        raise TlsError(f"{source}: its signature does not match its key; it was altered")
    names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    asked = str(names[0].value) if names else ""
    if asked != name:
        raise TlsError(
            f"{source} names {asked!r}, and you are signing for {name!r}: sign only the "
            "request the site itself sent you"
        )
    if role == "site" and not _SITE_NAME.match(name):
        raise TlsError(f"{source}: a site's name is a DNS label (lower case), not {name!r}")
    key = request.public_key()
    strong = (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= 256) or (
        isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    )
    if not strong or not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TlsError(f"{source}: its key is too weak (EC P-256 or RSA 2048 and up)")
    sans = _requested_hosts(request)
    if role == "aggregator" and sorted(sans) != sorted(hosts):
        raise TlsError(
            f"{source} asks for hosts {', '.join(sans) or 'none'}; the aggregator is to serve "
            f"{', '.join(hosts) or 'none'} (--aggregator-host)"
        )
    if role == "site" and sans:
        raise TlsError(f"{source}: a site's certificate names no hosts ({', '.join(sans)})")
    unit, usage = (
        (SITE_ORGANISATION, ExtendedKeyUsageOID.CLIENT_AUTH)
        if role == "site"
        else (AGGREGATOR_ORGANISATION, ExtendedKeyUsageOID.SERVER_AUTH)
    )
    return leaf_certificate(ca, key, name, unit, usage, [general_name(h) for h in sans], days)


def write_signed(folder: Path, ca: Authority, certificate: x509.Certificate) -> None:
    """folder/tls.crt and folder/ca.crt: both public, to go back to the requester."""
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (folder / CERT_FILE).write_bytes(certificate.public_bytes(pem))
    (folder / CA_FILE).write_bytes(ca.cert.public_bytes(pem))


def _requested_hosts(request: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]
