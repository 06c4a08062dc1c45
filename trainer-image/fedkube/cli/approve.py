"""`fedkube approve`: the site admin consents to one job, after reading its terms in words.

It reads the FederatedJob with kubectl (the engine imports no Kubernetes client), prints what
the job would do with the site's data, asks, and applies a cluster-scoped SiteApproval pinned
to the digest of those terms. A later change of the job's terms is not approved by it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys

import yaml

from fedkube import exit_codes
from fedkube.errors import FedkubeError, SpecError
from fedkube.spec.approval import approval_document
from fedkube.spec.load import parse_job
from fedkube.spec.terms import describe_terms, terms_digest

_DURATION = re.compile(r"^(\d+)([mhd])$")


def _kubectl(args: argparse.Namespace, *words: str, input: str | None = None) -> str:
    command = [args.kubectl, *(["--context", args.context] if args.context else []), *words]
    try:
        out = subprocess.run(command, input=input, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise FedkubeError(
            f"`fedkube approve` needs kubectl ({args.kubectl} was not found): install it, or "
            "give its path with --kubectl"
        ) from None
    if out.returncode != 0:
        raise FedkubeError(f"kubectl {' '.join(words)}: {out.stderr.strip()}")
    return out.stdout


def expiry(args: argparse.Namespace, now: datetime.datetime) -> datetime.datetime | None:
    if args.expires_at:
        try:
            at = datetime.datetime.fromisoformat(args.expires_at)
        except ValueError:
            raise SpecError(
                "--expires-at", [f"{args.expires_at!r}: not an RFC 3339 time"]
            ) from None
        return at if at.tzinfo else at.replace(tzinfo=datetime.UTC)
    if args.expires_in:
        m = _DURATION.match(args.expires_in)
        if not m:
            raise SpecError("--expires-in", [f"{args.expires_in!r}: give 90m, 12h or 30d"])
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now + datetime.timedelta(**{unit: int(m.group(1))})
    return None


def cmd_approve(args: argparse.Namespace) -> int:
    found = json.loads(
        _kubectl(
            args, "get", "federatedjobs.fedkube.io", args.job, "-n", args.namespace, "-o", "json"
        )
    )
    job = parse_job(found, f"FederatedJob {args.namespace}/{args.job}")
    expires = expiry(args, datetime.datetime.now(datetime.UTC))
    words = describe_terms(job, args.namespace)
    if expires is not None:
        words.append(f"approval expires: {expires.isoformat()}")
    who = f"site {args.site}" if args.site else "every site of the job that trains here"
    print(f"Approving, for {who}:")
    for line in words:
        print(f"  {line}")
    document = approval_document(
        args.namespace, job.name, args.site, terms_digest(job), "\n".join(words), expires
    )
    if args.dry_run:
        print(yaml.safe_dump(document, sort_keys=False), end="")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: not a terminal: read the terms above and pass --yes", file=sys.stderr)
            return exit_codes.BAD_INPUT
        if input("Approve these terms? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not approved")
            return exit_codes.FAILED
    name = document["metadata"]["name"]
    earlier = _existing(args, name)
    if earlier is not None and earlier != document["spec"]["termsSha256"]:
        # Approved terms are immutable: the approval of other terms goes, this one comes.
        _kubectl(args, "delete", "siteapprovals.fedkube.io", name)
        print(f"replacing SiteApproval {name}, which approved terms sha256 {earlier[:12]}...")
    _kubectl(args, "apply", "-f", "-", input=yaml.safe_dump(document))
    print(f"approved: SiteApproval {name}")
    return 0


def _existing(args: argparse.Namespace, name: str) -> str | None:
    """The terms digest an approval of this name approved, if there is one."""
    found = _kubectl(
        args, "get", "siteapprovals.fedkube.io", name, "--ignore-not-found", "-o", "json"
    )
    if not found.strip():
        return None
    return str(json.loads(found)["spec"]["termsSha256"])


def approve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ap = sub.add_parser(
        "approve",
        help="consent, as the site admin, to a job's terms (a SiteApproval), after reading them",
    )
    ap.add_argument("job", help="the FederatedJob's name")
    ap.add_argument("-n", "--namespace", required=True, help="the job's namespace")
    ap.add_argument("--site", help="the site consenting (Helm site.name); default: every site")
    when = ap.add_mutually_exclusive_group()
    when.add_argument("--expires-in", help="the approval lapses after 90m, 12h, 30d...")
    when.add_argument("--expires-at", help="or at this RFC 3339 time")
    ap.add_argument("--yes", action="store_true", help="approve without asking")
    ap.add_argument(
        "--dry-run", action="store_true", help="print the SiteApproval instead of applying it"
    )
    ap.add_argument("--kubectl", default="kubectl", help="the kubectl to use")
    ap.add_argument("--context", help="the kubeconfig context (default: the current one)")
    ap.set_defaults(fn=cmd_approve)
