"""`fedkube certs` and `fedkube revoke`: the consortium's certificates and revocation list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkube import exit_codes


def cmd_certs(args: argparse.Namespace) -> int:
    from fedkube.security.certs import create_consortium

    if args.out is None:
        print(
            "error: give --out (every key made here, for a test or a one-party lab), or use "
            "`fedkube certs ca|request|sign` so that each site makes its own key",
            file=sys.stderr,
        )
        return exit_codes.BAD_INPUT

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


def cmd_ca(args: argparse.Namespace) -> int:
    from fedkube.security.certs import new_authority, write_authority

    out = Path(args.out)
    if (out / "ca.key").exists():
        print(f"error: {out / 'ca.key'} exists; the consortium has its CA", file=sys.stderr)
        return exit_codes.BAD_INPUT
    write_authority(out, new_authority(args.consortium, args.days))
    print(
        f"wrote the {args.consortium} consortium's CA to {out}: ca.crt goes to every site, "
        f"{out / 'ca.key'} stays offline; sign the sites' requests with `fedkube certs sign`"
    )
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    from fedkube.security.signing_requests import write_request

    hosts = [h for h in (args.aggregator_host or "").split(",") if h]
    path = write_request(Path(args.out), args.name, hosts)
    print(
        f"wrote a key ({Path(args.out) / 'tls.key'}, which never leaves this site) and a "
        f"signing request: send {path} to the consortium's CA, and put the tls.crt and ca.crt "
        "it returns beside the key"
    )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from fedkube.security.signing_requests import load_authority, sign_request, write_signed

    ca = load_authority(Path(args.ca_dir))
    request = Path(args.request)
    hosts = [h for h in (args.aggregator_host or "").split(",") if h]
    certificate = sign_request(
        ca, request.read_bytes(), args.role, args.name, hosts, args.days, str(request)
    )
    write_signed(Path(args.out), ca, certificate)
    print(
        f"signed {args.name} as a {args.role} of {ca.consortium} (serial "
        f"{certificate.serial_number:x}): return {Path(args.out) / 'tls.crt'} and ca.crt"
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
    certs = sub.add_parser(
        "certs",
        help="certificates: `ca`, `request` (at each site) and `sign` (at the CA); or every "
        "key at once with --out (tests, a one-party lab)",
    )
    certs.add_argument("--out", help="folder to write (ca/, aggregator/, sites/)")
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
    steps = certs.add_subparsers(dest="step")
    ca = steps.add_parser("ca", help="the consortium's CA (ca.crt, ca.key), once")
    ca.add_argument("--out", required=True, help="the CA's folder")
    ca.add_argument("--consortium", required=True, help="named in every certificate it signs")
    ca.add_argument("--days", type=int, default=3650)
    ca.set_defaults(fn=cmd_ca)
    req = steps.add_parser(
        "request", help="at a site: its key and a signing request (the key never leaves)"
    )
    req.add_argument("--name", required=True, help="the site's name (or the aggregator's host)")
    req.add_argument("--out", required=True, help="the folder for tls.key and request.csr")
    req.add_argument(
        "--aggregator-host", help="for the aggregator: the names it is reached at (comma-separated)"
    )
    req.set_defaults(fn=cmd_request)
    sign = steps.add_parser("sign", help="at the CA: check a request and sign it")
    sign.add_argument("request", help="the request.csr a site sent")
    sign.add_argument("--ca-dir", required=True, help="the CA's folder (ca.crt, ca.key)")
    sign.add_argument("--name", required=True, help="who you are signing for (the request's name)")
    sign.add_argument("--role", choices=["site", "aggregator"], default="site")
    sign.add_argument(
        "--aggregator-host",
        help="with --role aggregator: the hosts it serves (must be the request's)",
    )
    sign.add_argument("--out", required=True, help="where to write tls.crt and ca.crt")
    sign.add_argument("--days", type=int, default=365)
    sign.set_defaults(fn=cmd_sign)


def revoke_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rev = sub.add_parser(
        "revoke", help="revoke a site's certificate: add it to the consortium's CRL (ca.crl)"
    )
    rev.add_argument("--ca-dir", required=True, help="the CA's folder (ca.crt, ca.key)")
    rev.add_argument("--cert", required=True, help="the certificate to revoke (tls.crt)")
    rev.add_argument("--crl", help="the list to add it to (default: CA folder/ca.crl)")
    rev.add_argument("--days", type=int, default=30, help="until the list's next update")
    rev.set_defaults(fn=cmd_revoke)
