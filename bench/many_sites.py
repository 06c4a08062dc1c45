"""Many sites against one aggregator: its memory, threads, file descriptors and round time
as the consortium grows from 10 to 1,000 sites.

    python bench/many_sites.py [--sites 10 100 1000] [--rounds 5] [--processes 4]

The aggregator is the real `fedkube aggregator` process; the sites are synthetic
(`fedkube.loadtest`): real gRPC clients of the real protocol, one connection each, many per
process, no torch. Each fetches the model, sends an update of the model's shape, and scores
the model when asked; some join late, some drop before answering or halfway through their
upload and come back. Every round's model change is checked against the FedAvg mean of the
constants its sites sent, so the table shows sums that are right, not only rounds that close.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from fedkube.loadtest import Churn, load_manifest, mlp_parameters, run_load

HIDDEN = [1024, 900]  # 64 -> 1024 -> 900 -> 10: about 1.0 M parameters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", type=int, default=4, help="processes the sites share")
    ap.add_argument("--drop", type=float, default=0.02, help="chance a site drops a task")
    ap.add_argument("--late", type=float, default=0.02, help="share of sites that join late")
    ap.add_argument("--sites-per-round", type=int, default=None)
    args = ap.parse_args()
    params = mlp_parameters(HIDDEN)
    print(
        f"model: MLP 64-{HIDDEN[0]}-{HIDDEN[1]}-10, {params:,} parameters "
        f"({params * 4 / 2**20:.1f} MiB); {args.rounds} rounds; sites in {args.processes} "
        f"processes; {args.drop:.0%} of tasks dropped, {args.late:.0%} of sites late\n"
    )
    print(
        "| sites | asked a round | updates a round | median round (s) | per site (ms) "
        "| aggregator idle (MiB) | peak (MiB) | peak - idle (MiB) | per site (KiB) "
        "| threads | fds | drops | refusals | worst error per parameter |"
    )
    print("|" + "---:|" * 14)
    churn = Churn(drop=args.drop, late=args.late)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sites:
            extra = {"sitesPerRound": args.sites_per_round} if args.sites_per_round else {}
            doc = load_manifest(f"many-{n}", n, args.rounds, HIDDEN, **extra)
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            run = run_load(folder, doc, min(args.processes, n), churn)
            history = run.result.history
            c = run.counters
            assert c.model_sum_disagreements == 0, "sites saw different models of one version"
            round_s = statistics.median(h.duration_seconds for h in history)
            updates = statistics.median(len(h.sites) for h in history)
            asked = args.sites_per_round or n
            extra_mib = (run.peak_bytes - run.idle_bytes) / 2**20
            print(
                f"| {n} | {asked} | {updates:.0f} | {round_s:.2f} | {1000 * round_s / updates:.1f} "
                f"| {run.idle_bytes / 2**20:.0f} | {run.peak_bytes / 2**20:.0f} "
                f"| {extra_mib:.0f} | {1024 * extra_mib / n:.0f} | {run.threads} | {run.fds} "
                f"| {c.drops_before_answer + c.drops_mid_upload} | {sum(c.refusals.values())} "
                f"| {max(run.sum_errors(params)):.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
