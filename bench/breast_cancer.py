"""Breast cancer across 5 hospitals: federated vs centralised accuracy, and what a round costs.

    python bench/breast_cancer.py [--manifest examples/breast-cancer.yaml]

Start-up first: runs the example with `fedkube run` three times with its children forked
from it (the default: torch and the engine imported once, shared) and three times as fresh
interpreters (FEDKUBE_EXEC=1), and prints the time from the command's start to round 1's
opening, the whole command's time and the peak proportional set size (PSS) summed over its
processes. Then runs the example once more (real processes, gRPC on loopback), trains the
same model centrally on the union of the sites' training splits with the same budget
(rounds x local epochs passes, same batch size, optimiser and learning rate) and evaluates
both on the union of the sites' held-out splits. Then prints, per round, the wall time
(from one round's close to the next), the slowest site's local training time, and the
difference: fedkube's own overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from _common import ROOT, centralised
from fedkube.spec import load_job


def tree_pss(root: psutil.Process) -> int:
    """Bytes of proportional set size of ``root`` and its descendants."""
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def timed_run(manifest: Path, exec_children: bool) -> tuple[float, float, int]:
    """(seconds to round 1's opening, seconds for the command, peak summed PSS bytes)."""
    env = dict(os.environ, FEDKUBE_EXEC="1" if exec_children else "0")
    with tempfile.TemporaryDirectory() as tmp:
        launched = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedkube", "run", str(manifest), "--output", tmp, "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            peak = max(peak, tree_pss(root))
            time.sleep(0.2)
        command = time.time() - launched
        if proc.returncode != 0:
            sys.exit(f"fedkube run failed with exit code {proc.returncode}")
        history = json.loads((Path(tmp) / "result.json").read_text())["history"]
    return history[0]["openedAt"] - launched, command, peak


def start_up(manifest: Path, runs: int = 3) -> None:
    print("| children | to round 1 (s) | whole command (s) | peak PSS, all processes (MB) |")
    print("|---|---:|---:|---:|")
    modes = ((False, "forked from `fedkube run`"), (True, "fresh interpreters"))
    for exec_children, label in modes:
        got = [timed_run(manifest, exec_children) for _ in range(runs)]
        first = statistics.median(g[0] for g in got)
        whole = statistics.median(g[1] for g in got)
        pss = statistics.median(g[2] for g in got) / 1e6
        print(f"| {label} | {first:.2f} | {whole:.2f} | {pss:.0f} |")
    print(f"\n(median of {runs} runs each)\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default=str(ROOT / "examples" / "breast-cancer.yaml"))
    ap.add_argument("--start-up-runs", type=int, default=3)
    args = ap.parse_args()
    manifest = Path(args.manifest)
    torch.set_num_threads(1)
    start_up(manifest, args.start_up_runs)
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
