"""Mutual TLS for the gRPC channel: credentials from a folder laid out like a Kubernetes TLS
Secret (tls.crt, tls.key, ca.crt), and the site identity a peer's certificate proves."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from fedkube.errors import TlsError
from fedkube.security.certs import CA_FILE, CERT_FILE, KEY_FILE

__all__ = [
    "TlsError",
    "channel_credentials",
    "endpoint_host",
    "is_loopback",
    "peer_certificate",
    "peer_site",
    "server_credentials",
]


def _read(folder: Path) -> tuple[bytes, bytes, bytes]:
    files = []
    for name in (CA_FILE, CERT_FILE, KEY_FILE):
        path = folder / name
        try:
            files.append(path.read_bytes())
        except OSError as e:
            raise TlsError(
                f"TLS folder {folder}: cannot read {name} ({e.strerror}); `fedkube certs` writes "
                "ca.crt, tls.crt and tls.key, as a Kubernetes TLS Secret holds them"
            ) from None
    return files[0], files[1], files[2]


def server_credentials(folder: Path) -> grpc.ServerCredentials:
    """The aggregator's side: its certificate, and every client must show one from the CA."""
    ca, cert, key = _read(folder)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(folder: Path) -> grpc.ChannelCredentials:
    """A site's side: its certificate, and the aggregator's must come from the CA."""
    ca, cert, key = _read(folder)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def peer_site(auth_context: dict[str, Any]) -> str | None:
    """The site a TLS peer's certificate names (its common name); None without TLS."""
    names = auth_context.get("x509_common_name") or []
    return names[0].decode() if names else None


def peer_certificate(auth_context: dict[str, Any]) -> x509.Certificate | None:
    """A TLS peer's certificate, parsed; None without TLS."""
    pems = auth_context.get("x509_pem_cert") or []
    return x509.load_pem_x509_certificate(pems[0]) if pems else None


def endpoint_host(endpoint: str) -> str:
    """The host of ``host:port`` (an IPv6 address without its brackets)."""
    return endpoint.rsplit(":", 1)[0].strip("[]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
