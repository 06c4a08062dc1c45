"""A 10-million-parameter model from 10 and from 30 sites: no gRPC size error, and the
aggregator's peak memory stays near the model's size whatever the number of sites.

    python bench/large_model_memory.py [--sites 10 30] [--rounds 2]

The aggregator runs as its own process. Its idle baseline is its resident memory once the
global model is built and it waits for sites; its peak high-water mark (VmHWM, reset at
that point) is read until it exits. Trainers are real `fedkube trainer` processes.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import status_kib
from fedkube.testing import LocalJob, manifest

HIDDEN = [3160, 3160]  # digits: 64 -> 3160 -> 3160 -> 10, about 10.2 M parameters


def n_params() -> int:
    sizes = [64, *HIDDEN, 10]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def run(sites: int, rounds: int, tmp: Path) -> dict:
    doc = manifest(
        f"big-{sites}",
        sites=sites,
        rounds=rounds,
        dataset="digits",
        min_sites=sites,
        model={"name": "mlp", "hiddenSizes": HIDDEN},
        timeout=900,
        joinGraceSeconds=600,
    )
    doc["spec"]["task"].update(batchSize=64, learningRate=0.01)
    folder = tmp / f"run-{sites}"
    folder.mkdir()
    job = LocalJob(folder, doc)
    agg = job.start_aggregator()
    try:
        while job.progress() is None:
            time.sleep(0.1)
        time.sleep(1.0)
        baseline = status_kib(agg.pid, "VmRSS")
        Path(f"/proc/{agg.pid}/clear_refs").write_text("5")  # reset the high-water mark
        for i in range(sites):
            job.start_trainer(f"site-{i}")
        peak = baseline
        while agg.poll() is None:
            try:
                peak = max(peak, status_kib(agg.pid, "VmHWM"))
            except (OSError, KeyError):
                break
            time.sleep(0.02)
        result = job.wait_done(timeout=600).to_json_dict()  # result.json's own keys
    finally:
        job.stop()
    durations = [h["durationSeconds"] for h in result["history"]]
    return {
        "baseline": baseline * 1024,
        "peak": peak * 1024,
        "round": float(np.median(durations)),
        "sites_in": min(len(h["sites"]) for h in result["history"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model_bytes = n_params() * 4
    print(
        f"model: MLP 64-{HIDDEN[0]}-{HIDDEN[1]}-10, {n_params():,} parameters, "
        f"{model_bytes / 2**20:.1f} MiB as float32; chunks of 1 MiB on the wire\n"
    )
    print(
        "| sites | sites per round | aggregator idle (MiB) | peak (MiB) | peak - idle (MiB) "
        "| (peak - idle) / model | median round (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sites:
            r = run(n, args.rounds, Path(tmp))
            extra = r["peak"] - r["baseline"]
            print(
                f"| {n} | {r['sites_in']} | {r['baseline'] / 2**20:.0f} | {r['peak'] / 2**20:.0f} "
                f"| {extra / 2**20:.0f} | {extra / model_bytes:.2f}x | {r['round']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
