"""Fuzzing, long: every coverage-guided target for a while, then the hostile client against a
real plain and a real secure-aggregation aggregator.

    python bench/fuzz.py [--seconds 600] [--targets update_stream codec_decode ...] [--out DIR]

Each target (``tests/fuzz/targets.py``: an update stream as the aggregator reads it, a model
as a site reads it, each codec's decoding, secure aggregation's messages, manifests, site
files) runs under atheris for ``--seconds``, its corpus kept in ``--out`` so a later run goes
on from it. Prints one table: target, seconds, inputs tried, coverage (libFuzzer's edges of
fedkube's own code), crashes, hangs (an input over 10 s), and for the hostile client the
inputs sent and whether the model moved. Findings are saved under ``--out/findings``;
rerun one with ``python -m tests.fuzz.run_target TARGET DIR FINDING``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.fuzzing import fuzz  # noqa: E402
from tests.fuzz.targets import TARGETS  # noqa: E402


def hostile_client(secure: bool, work: Path) -> tuple[int, dict[str, int], bool, float]:
    """(inputs, statuses, the model moved, seconds) against one real aggregator."""
    import grpc
    import numpy as np
    from fedkube.proto import fedkube_pb2_grpc as pb_grpc
    from fedkube.testing import LocalJob, manifest

    from tests.fuzz.hostile_client import JOB, attack, finite
    from tests.support.wire import FakeSiteStream, fetch

    doc = manifest(JOB, sites=3, rounds=2, min_sites=3, timeout=3600, joinGraceSeconds=0.5)
    if secure:
        doc["spec"]["security"] = {"secureAggregation": {"threshold": 3}}
    work.mkdir(parents=True, exist_ok=True)
    job = LocalJob(work, doc)
    started = time.monotonic()
    try:
        agg = job.start_aggregator()
        job.wait_for(lambda p: p.phase == "Running", timeout=60)
        stub = pb_grpc.AggregatorStub(grpc.insecure_channel(f"127.0.0.1:{job.port}"))
        streams = [FakeSiteStream(stub, s, JOB) for s in ("site-0", "site-1")]
        for s in streams:
            s.next_task()
        _, before = fetch(stub, job=JOB)
        outcome = attack(stub, before, lambda: agg.poll() is None)
        _, after = fetch(stub, job=JOB)
        moved = not finite(after) or any(not np.array_equal(after[k], before[k]) for k in before)
        return outcome.inputs, outcome.by_status, moved, time.monotonic() - started
    finally:
        job.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600, help="per target (default 600)")
    ap.add_argument("--targets", nargs="*", default=sorted(TARGETS), choices=sorted(TARGETS))
    ap.add_argument("--out", help="corpus and findings (default: a new temporary folder)")
    args = ap.parse_args()
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fedkube-fuzz-"))
    rows = []
    for target in args.targets:
        run = fuzz(target, args.seconds, work)
        rows.append((target, f"{run.seconds:g}", f"{run.inputs:,}", str(run.coverage),
                     str(run.crashes), str(run.hangs), "-"))  # fmt: skip
        for artifact in run.artifacts:
            print(f"finding: {target}: {artifact}", file=sys.stderr)
        print(f"{target}: {run.inputs:,} inputs, coverage {run.coverage}", file=sys.stderr)
    for secure in (False, True):
        inputs, statuses, moved, took = hostile_client(secure, work / f"client-{secure}")
        name = "hostile client, " + ("secure aggregation" if secure else "plain")
        rows.append((name, f"{took:.0f}", f"{inputs:,}", "-", "0", "0", "yes" if moved else "no"))
        print(f"{name}: {statuses}", file=sys.stderr)
    head = ("target", "seconds", "inputs tried", "coverage", "crashes", "hangs", "model changes")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\ncorpus and findings: {work}")
    bad = any(r[4] != "0" or r[5] != "0" or r[6] == "yes" for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
