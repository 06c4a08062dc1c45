"""A hundred jobs on one operator: JOBS FederatedJobs applied at once on a test control plane,
their pods on a simulated node (KWOK) except REAL jobs' whose aggregator and trainers run as
real processes. Prints how long the pods took to appear, how far the jobs' status trails their
aggregators, the operator's CPU, memory, API requests per job per minute and reconcile errors.

    python bench/operator_load.py [--jobs 100] [--real 2] [--window 120] [--no-baseline]

Each run starts a fresh control plane twice: once with the baseline operator (every job
reconciled in full on every 2 s tick, on kopf's default of CPUs + 4 threads, as it worked
before the load run was measured, less two savings both columns share: the approvals listed
once a second for all jobs, and a status written only where it changed) and once as it ships,
and prints the two side by side.

Needs what `bash tests/run-all.sh` builds (the control-plane binaries) and builds KWOK from
the Go module proxy on first use (tests/tools/build-kwok.sh, about 3 minutes).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kube_harness.load import run_load, table  # noqa: E402

# The operator before the load run: every tick a full reconcile, kopf's default thread pool.
BASELINE = ("--resync-seconds=0", "--workers=6")


def main() -> int:
    for name in ("node-agent", "urllib3", "kubernetes"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--real", type=int, default=2, help="jobs whose pods run real processes")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--window", type=float, default=120, help="seconds measured at steady state")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--no-baseline", action="store_true", help="run only the operator as it ships")
    args = ap.parse_args()
    runs = {"operator": ()} if args.no_baseline else {"baseline": BASELINE, "operator": ()}
    results = {}
    for name, flags in runs.items():
        with tempfile.TemporaryDirectory(prefix="fedkube-load-") as tmp:
            results[name] = run_load(
                Path(tmp), args.jobs, args.real, args.rounds, args.window, args.timeout, flags
            )
    first = next(iter(results.values()))
    print(
        f"operator load: {first.jobs} jobs ({first.real} with real processes), "
        f"{first.pods_per_job} pods each, applied in one `kubectl apply`; "
        f"window {first.window_seconds:.0f} s"
    )
    print("\n".join(table(results)))
    return 0 if all(r.real_succeeded() == r.real for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
