"""`fedkube audit verify PATH`: check a site's hash-chained audit trail (the operator's
decisions, each trainer's contributions) and name the first entry edited, dropped or moved."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkube import exit_codes


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from fedkube.storage.audit_trail import head_of, verify_trail

    path = Path(args.path)
    count, problem = verify_trail(path)
    if problem is not None:
        print(f"audit trail broken after {count} intact entries: {problem}", file=sys.stderr)
        return exit_codes.FAILED
    head = head_of(path)
    if args.head and args.head != head:
        print(
            f"{path}: {count} entries chain correctly, but its head is {head[:16]}..., not "
            f"{args.head[:16]}... as recorded: entries were cut off its end, or it is another "
            "trail",
            file=sys.stderr,
        )
        return exit_codes.FAILED
    print(f"{path}: {count} entries, intact; head {head}")
    return 0


def audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="a site's audit trail")
    steps = audit.add_subparsers(dest="step", required=True)
    verify = steps.add_parser(
        "verify", help="check the hash chain; name the first entry edited, dropped or moved"
    )
    verify.add_argument("path", help="the trail (a .jsonl file)")
    verify.add_argument(
        "--head", help="the last hash recorded elsewhere: also shows entries cut off the end"
    )
    verify.set_defaults(fn=cmd_audit_verify)
