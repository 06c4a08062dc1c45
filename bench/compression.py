"""Update codecs on non-identical site data: digits over 10 sites, Dirichlet label skew.

    python bench/compression.py [--seeds 3] [--rounds 100] [--alphas 0.5 0.1] [--workers 2]

For each alpha, seed and codec (used both ways: updates up, model changes down), runs the
job on the in-process twin of `fedkube run` (the same coordinator, codecs and site
training, without gRPC) and prints one table per alpha: uplink and downlink tensor bytes
per round (all sites), how many times fewer bytes than `none` up and in all, final
held-out accuracy (mean and sd over seeds) and its gap to `none`. Saves a plot of accuracy
against total bytes. Model: MLP 64-32-10 (2,410 parameters), FedAvg, batch 32, SGD lr
0.1, one local epoch a round. Downlink bytes include the first whole model each site
fetches; top-k keeps at least one value per tensor (the biases), so a small model's "1 %"
is a little more.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from strategies_digits import job_doc

CODECS: dict[str, dict[str, Any]] = {
    "none": {"codec": "none"},
    "int8": {"codec": "int8", "blockSize": 4096},
    "topk 10%": {"codec": "topk", "fraction": 0.1},
    "topk 5%": {"codec": "topk", "fraction": 0.05},
    "topk_int8 5%": {"codec": "topk_int8", "fraction": 0.05},
    "topk_int8 2%": {"codec": "topk_int8", "fraction": 0.02},
    "topk 1%": {"codec": "topk", "fraction": 0.01},
    "topk_int8 1%": {"codec": "topk_int8", "fraction": 0.01},
}


def run(args: tuple[float, int, int, str]) -> tuple[float, int, str, float, float, float]:
    import torch
    from fedkube.simulation import simulate
    from fedkube.spec import parse_job

    torch.set_num_threads(1)
    alpha, seed, rounds, label = args
    doc = job_doc(alpha, seed, rounds, {"name": "fedavg"})
    doc["spec"]["communication"] = {"uplink": CODECS[label], "downlink": CODECS[label]}
    doc["spec"]["evaluation"] = {"everyRounds": rounds}
    history = simulate(parse_job(doc)).history
    up = statistics.mean(h.bytes_received for h in history)
    down = statistics.mean(h.bytes_sent for h in history)
    accuracy = history[-1].accuracy
    assert accuracy is not None
    return alpha, seed, label, up, down, accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.1])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plot", default=str(Path(__file__).parent / "out" / "compression.png"))
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    started = time.time()
    tasks = [(a, s, args.rounds, c) for a in args.alphas for s in seeds for c in CODECS]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(run, tasks))
    by: dict[tuple[float, str], list[tuple[float, float, float]]] = {}
    for alpha, _, label, up, down, acc in runs:
        by.setdefault((alpha, label), []).append((up, down, acc))
    print(
        f"digits, 10 sites, MLP 64-32-10, FedAvg, {args.rounds} rounds, seeds {seeds}; "
        f"{time.time() - started:.0f} s\n"
    )
    for alpha in args.alphas:
        base = by[(alpha, "none")]
        base_up = statistics.mean(r[0] for r in base)
        base_down = statistics.mean(r[1] for r in base)
        base_acc = statistics.mean(r[2] for r in base)
        print(f"### Dirichlet alpha = {alpha}\n")
        print(
            "| codec (both ways) | uplink / round | downlink / round | fewer bytes: up, all | "
            "accuracy (mean ± sd) | gap to none |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for label in CODECS:
            rows = by[(alpha, label)]
            up = statistics.mean(r[0] for r in rows)
            down = statistics.mean(r[1] for r in rows)
            acc = [r[2] for r in rows]
            print(
                f"| {label} | {up / 1e3:.1f} kB | {down / 1e3:.1f} kB | {base_up / up:.1f}x, "
                f"{(base_up + base_down) / (up + down):.2f}x | {100 * np.mean(acc):.2f} ± "
                f"{100 * np.std(acc):.2f} % | {100 * (np.mean(acc) - base_acc):+.2f} pt |"
            )
        print()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: pip install -e '.[bench]' for the plot)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for alpha, marker in zip(args.alphas, "os^", strict=False):
        for label in CODECS:
            rows = by[(alpha, label)]
            total = statistics.mean(r[0] + r[1] for r in rows)
            ax.scatter(total / 1e3, 100 * np.mean([r[2] for r in rows]), marker=marker)
            ax.annotate(
                f"{label} (a={alpha})",
                (total / 1e3, 100 * np.mean([r[2] for r in rows])),
                fontsize=7,
            )
    ax.set(xlabel="bytes per round, up and down (kB)", ylabel="final accuracy (%)", xscale="log")
    ax.grid(alpha=0.3)
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
