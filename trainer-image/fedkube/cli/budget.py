"""`fedkube budget FOLDER`: what each of a site's datasets has given, from the ledgers its
trainers keep on the state claim (`datasets/`): per job, what it reserved, what it spent and
how much of that on noised held-out scores, and what is left of the site's cap."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkube import exit_codes


def cmd_budget(args: argparse.Namespace) -> int:
    from fedkube.privacy.dataset_budget import read_ledgers

    folder = Path(args.folder)
    if not folder.is_dir():
        print(
            f"error: {folder} is not a folder; give the datasets/ folder of the site's state "
            "claim (Helm site.state.claimName)",
            file=sys.stderr,
        )
        return exit_codes.BAD_INPUT
    try:
        ledgers = read_ledgers(folder)
    except ValueError as e:
        print(f"error: a ledger in {folder} cannot be read ({e}); restore it", file=sys.stderr)
        return exit_codes.FAILED
    if not ledgers:
        print(f"{folder}: no dataset has a ledger yet")
        return 0
    for ledger in ledgers:
        d = ledger["dataset"]
        cap = f"{args.cap:g}" if args.cap is not None else "?"
        left = f", {max(0.0, args.cap - ledger['held']):.3f} left" if args.cap is not None else ""
        print(f"dataset {d['file']} on {d['volume']} (sha256 {d['sha256'][:12]}...)")
        print(f"  held {ledger['held']:.3f} of cap {cap}{left}")
        print(f"  {'job':<40} {'reserved':>9} {'spent':>9} {'held-out':>9}  state")
        for job, entry in sorted(ledger["jobs"].items()):
            state = "finished" if entry.get("finished") else "running"
            print(
                f"  {job:<40} {entry.get('reserved', 0.0):>9.3f} "
                f"{entry.get('spent', 0.0):>9.3f} {entry.get('heldOut', 0.0):>9.3f}  {state}"
            )
    return 0


def budget_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "budget",
        help="what each of the site's datasets has given, per job (the state claim's ledgers)",
    )
    p.add_argument("folder", help="the datasets/ folder on the site's state claim")
    p.add_argument(
        "--cap", type=float, help="the site's cap (Helm site.epsilonCap), to show what is left"
    )
    p.set_defaults(fn=cmd_budget)
