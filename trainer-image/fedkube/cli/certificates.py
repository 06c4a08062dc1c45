"""`fedkube certs` and `fedkube revoke`: the consortium's certificates and revocation list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkube import exit_codes


def cmd_certs(args: argparse.Namespace) -> int:
    from fedkube.security.certs import create_consortium

    sites = [s for s in (args.sites or "").split(",") if s]
    if args.manifest:
        from fedkube.spec.load import load_job

        sites += [s.name for s in load_job(Path(args.manifest)).spec.sites if s.name not in sites]
    if not sites:
        print("error: name the sites with --sites a,b,c or --manifest", file=sys.stderr)
        return exit_codes.BAD_INPUT
    out = Path(args.out)
    hosts = [h for h in args.aggregator_host.split(",") if h]
    create_consortium(out, args.consortium, sites, hosts, args.days)
    print(
        f"wrote a CA, the aggregator's certificate ({', '.join(hosts)}) and {len(sites)} site "
        f"certificates to {out}; keep {out / 'ca' / 'ca.key'} offline"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from fedkube.security.revocation import CRL_FILE, revoke

    ca_dir = Path(args.ca_dir)
    crl = Path(args.crl) if args.crl else ca_dir / CRL_FILE
    serial = revoke(ca_dir / "ca.crt", ca_dir / "ca.key", Path(args.cert), crl, args.days)
    print(
        f"revoked serial {serial:x} ({args.cert}); {crl} now lists it: give it to the "
        f"aggregator and to every site as {CRL_FILE} in their TLS folders (a key of each "
        "Secret): the aggregator refuses revoked sites, each site a revoked aggregator"
    )
    return 0


def certs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="create a consortium CA and site certificates")
    certs.add_argument("--out", required=True, help="folder to write (ca/, aggregator/, sites/)")
    certs.add_argument("--sites", help="comma-separated site names")
    certs.add_argument("--manifest", help="take the site names from this job")
    certs.add_argument("--consortium", default="fedkube", help="name in the CA certificate")
    certs.add_argument(
        "--aggregator-host",
        default="localhost,127.0.0.1",
        help="names and addresses the aggregator is reached at (certificate SANs)",
    )
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(fn=cmd_certs)


def revoke_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rev = sub.add_parser(
        "revoke", help="revoke a site's certificate: add it to the consortium's CRL (ca.crl)"
    )
    rev.add_argument("--ca-dir", required=True, help="the CA's folder (ca.crt, ca.key)")
    rev.add_argument("--cert", required=True, help="the certificate to revoke (tls.crt)")
    rev.add_argument("--crl", help="the list to add it to (default: CA folder/ca.crl)")
    rev.add_argument("--days", type=int, default=30, help="until the list's next update")
    rev.set_defaults(fn=cmd_revoke)
