"""Breast cancer across 5 hospitals: federated vs centralised accuracy, and what a round costs.

    python bench/breast_cancer.py [--manifest examples/breast-cancer.yaml]

Runs the example with `fedkube run` (real processes, gRPC on loopback), then trains the
same model centrally on the union of the sites' training splits with the same budget
(rounds x local epochs passes, same batch size, optimiser and learning rate) and evaluates
both on the union of the sites' held-out splits. Then prints, per round, the wall time
(from one round's close to the next), the slowest site's local training time, and the
difference: fedkube's own overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, centralised
from fedkube.spec import load_job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default=str(ROOT / "examples" / "breast-cancer.yaml"))
    args = ap.parse_args()
    manifest = Path(args.manifest)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedkube",
                "run",
                str(manifest),
                "--output",
                tmp,
                "--quiet",
                "--fresh",
            ],
            capture_output=True,
            text=True,
        )
        command_wall = time.perf_counter() - started
        if run.returncode != 0:
            sys.exit(f"fedkube run failed:\n{run.stdout}\n{run.stderr}")
        result = json.loads((Path(tmp) / "result.json").read_text())
    c = centralised(manifest)
    c_acc, c_loss, c_wall = c.accuracy, c.loss, c.wall_seconds
    g = result["global"]
    job = load_job(manifest)
    print(
        f"## {job.name}: {len(job.spec.sites)} sites, {job.spec.rounds} rounds, "
        f"{job.spec.task.model.name}\n"
    )
    print("| setting | held-out accuracy | held-out loss | wall time |")
    print("|---|---:|---:|---:|")
    print(
        f"| fedkube, {len(job.spec.sites)} site processes over gRPC | {100 * g['accuracy']:.2f} % "
        f"| {g['loss']:.4f} | {command_wall:.1f} s (whole `fedkube run`) |"
    )
    print(
        f"| centralised on the union, same budget | {100 * c_acc:.2f} % | {c_loss:.4f} | "
        f"{c_wall:.2f} s (training only) |"
    )
    print(
        f"\ndifference: {100 * (c_acc - g['accuracy']):+.2f} points (centralised minus federated)\n"
    )

    hist = result["history"]
    rows = []
    for i, h in enumerate(hist):
        start = hist[i - 1]["closedAt"] if i else h["openedAt"]
        wall = h["closedAt"] - start
        rows.append((h["round"], wall, h["maxTrainSeconds"], wall - h["maxTrainSeconds"]))
    print("| round | round wall (s) | slowest site's training (s) | overhead (s) |")
    print("|---:|---:|---:|---:|")
    for r, wall, train, over in rows:
        print(f"| {r} | {wall:.4f} | {train:.4f} | {over:.4f} |")
    overheads = [o for *_, o in rows]
    print(
        f"\noverhead per round: median {statistics.median(overheads):.4f} s, mean "
        f"{statistics.mean(overheads):.4f} s, max {max(overheads):.4f} s"
    )
    print(
        f"whole run: {result['wallSeconds']:.2f} s in the aggregator (start to result), "
        f"{command_wall:.2f} s for the `fedkube run` command including process start-up"
    )
    print(
        "for reference (issue 2, same machine kind): Flower 1.42 deployment mode 30-40 s per "
        "round, its in-process simulation 0.115 s per round"
    )


if __name__ == "__main__":
    main()
