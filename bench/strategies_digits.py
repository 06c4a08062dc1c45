"""Strategies on non-identical site data: digits over 10 sites with Dirichlet label skew.

    python bench/strategies_digits.py [--seeds 5] [--rounds 100] [--alphas 0.1 0.5] [--workers 2]

For each alpha and seed (the seed sets both the split and the initial model), runs centralised
training on the union of the sites' training splits (same model, rounds x local epochs passes)
and every strategy on the in-process twin of `fedkube run` (the same strategies and site
training, without gRPC). Prints one table per alpha: final held-out accuracy (mean and spread
over seeds), rounds until within 1 point of centralised (median over the seeds that got
there, and how many did), bytes moved per round; and saves a plot of accuracy against round.
Model: MLP 64-32-10, batch 32, SGD lr 0.1, one local epoch per round. Server settings
(FedAdam/FedYogi eta 0.03, FedAvgM beta 0.9, FedProx mu 0.1) were picked on seeds 0 and 1 at
alpha 0.1 from a small grid (local lr 0.05/0.1, 1/2 local epochs, eta 0.01/0.03).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import centralised

STRATEGIES: dict[str, dict[str, Any]] = {
    "FedAvg": {"name": "fedavg"},
    "FedProx": {"name": "fedprox", "mu": 0.1},
    "SCAFFOLD": {"name": "scaffold"},
    "FedAdam": {"name": "fedadam", "serverLearningRate": 0.03},
    "FedYogi": {"name": "fedyogi", "serverLearningRate": 0.03},
    "FedAvgM": {"name": "fedavgm", "serverLearningRate": 1.0, "momentum": 0.9},
}


def job_doc(alpha: float, seed: int, rounds: int, strategy: dict[str, Any]) -> dict[str, Any]:
    from fedkube.testing import manifest

    doc = manifest(
        "digits-bench",
        sites=10,
        rounds=rounds,
        dataset="digits",
        model={"name": "mlp", "hiddenSizes": [32]},
    )
    doc["spec"]["task"].update(batchSize=32, learningRate=0.1, localEpochs=1, seed=seed)
    doc["spec"]["strategy"] = strategy
    for s in doc["spec"]["sites"]:
        s["data"]["sklearn"].update(partitioner="dirichlet", alpha=alpha, seed=seed)
    return doc


def run_federated(args: tuple[float, int, int, str]) -> tuple[float, int, str, list[float], float]:
    import torch
    from fedkube.simulation import simulate
    from fedkube.spec import parse_job

    torch.set_num_threads(1)
    alpha, seed, rounds, label = args
    result = simulate(parse_job(job_doc(alpha, seed, rounds, STRATEGIES[label])), evaluate_every=1)
    accuracy = [h.accuracy for h in result.history]
    bytes_per_round = statistics.mean(h.bytes_received + h.bytes_sent for h in result.history)
    return alpha, seed, label, accuracy, bytes_per_round


def run_centralised(args: tuple[float, int, int]) -> tuple[float, int, float]:
    import torch

    torch.set_num_threads(1)
    alpha, seed, rounds = args
    return alpha, seed, centralised(job_doc(alpha, seed, rounds, {"name": "fedavg"}), seed).accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plot", default=str(Path(__file__).parent / "out" / "strategies_digits.png"))
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    started = time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        central = {
            (a, s): acc
            for a, s, acc in pool.map(
                run_centralised, [(a, s, args.rounds) for a in args.alphas for s in seeds]
            )
        }
        runs = list(
            pool.map(
                run_federated,
                [
                    (a, s, args.rounds, label)
                    for a in args.alphas
                    for s in seeds
                    for label in STRATEGIES
                ],
            )
        )
    curves: dict[tuple[float, str], list[list[float]]] = {}
    bytes_: dict[str, float] = {}
    reached: dict[tuple[float, str], list[int | None]] = {}
    for alpha, seed, label, acc, b in runs:
        curves.setdefault((alpha, label), []).append(acc)
        bytes_[label] = b
        target = central[(alpha, seed)] - 0.01
        first = next((r + 1 for r, a in enumerate(acc) if a >= target), None)
        reached.setdefault((alpha, label), []).append(first)
    print(
        f"digits, 10 sites, MLP 64-32-10, {args.rounds} rounds, seeds {seeds}; "
        f"{time.time() - started:.0f} s\n"
    )
    for alpha in args.alphas:
        c = [central[(alpha, s)] for s in seeds]
        print(f"### Dirichlet alpha = {alpha}\n")
        print(
            "| setting | final accuracy (mean ± sd) | rounds to within 1 pt of centralised "
            "(median; seeds that got there) | bytes per round |"
        )
        print("|---|---:|---:|---:|")
        print(f"| centralised | {100 * np.mean(c):.2f} ± {100 * np.std(c):.2f} % | - | - |")
        for label in STRATEGIES:
            finals = [acc[-1] for acc in curves[(alpha, label)]]
            got = [r for r in reached[(alpha, label)] if r is not None]
            med = f"{statistics.median(got):.0f}" if got else "-"
            print(
                f"| {label} | {100 * np.mean(finals):.2f} ± {100 * np.std(finals):.2f} % | "
                f"{med}; {len(got)}/{len(seeds)} | {bytes_[label] / 1e3:.0f} kB |"
            )
        print()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: pip install -e '.[bench]' for the plot)")
        return
    fig, axes = plt.subplots(
        1, len(args.alphas), figsize=(6 * len(args.alphas), 4.5), squeeze=False
    )
    for ax, alpha in zip(axes[0], args.alphas, strict=True):
        for label in STRATEGIES:
            mean = np.mean(curves[(alpha, label)], axis=0)
            ax.plot(np.arange(1, len(mean) + 1), 100 * mean, label=label)
        ax.axhline(
            100 * np.mean([central[(alpha, s)] for s in seeds]),
            color="k",
            ls="--",
            label="centralised",
        )
        ax.set(
            title=f"digits, 10 sites, Dirichlet {alpha}",
            xlabel="round",
            ylabel="held-out accuracy (%)",
            ylim=(50, 100),
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
