"""Two of ten sites send sign-flipped updates scaled by 10: robust aggregation against FedAvg.

    python bench/poisoning.py [--seeds 3] [--rounds 40]

Digits split IID over 10 sites, MLP 64-32-10, on the in-process twin of `fedkube run`; the
bad sites train honestly and then send -10 x their update.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

SETTINGS: dict[str, tuple[dict[str, Any] | None, bool]] = {
    "FedAvg, no attack": (None, False),
    "FedAvg": (None, True),
    "median": ({"method": "median"}, True),
    "trimmed mean (0.2)": ({"method": "trimmed_mean", "trimFraction": 0.2}, True),
    "multi-Krum (f=2)": ({"method": "multi_krum", "byzantineSites": 2}, True),
}
BAD = {"site-3", "site-7"}


def run(robust: dict[str, Any] | None, attack: bool, seed: int, rounds: int) -> float:
    from fedkube.simulation import simulate
    from fedkube.spec import parse_job
    from fedkube.testing import manifest

    doc = manifest("poison", sites=10, rounds=rounds, dataset="digits", model={"name": "mlp"})
    doc["spec"]["task"].update(learningRate=0.1, seed=seed)
    for s in doc["spec"]["sites"]:
        s["data"]["sklearn"]["seed"] = seed
    if robust:
        doc["spec"]["minSitesPerRound"] = 10
        doc["spec"]["security"] = {"robustAggregation": robust}

    def flip(site: str, update: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: -10 * v for k, v in update.items()} if attack and site in BAD else update

    return float(simulate(parse_job(doc), tamper=flip).history[-1].accuracy)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    results = {
        label: [run(robust, attack, seed, args.rounds) for seed in range(args.seeds)]
        for label, (robust, attack) in SETTINGS.items()
    }
    clean = np.mean(results["FedAvg, no attack"])
    print(
        f"digits, 10 IID sites, 2 send -10 x their update; {args.rounds} rounds, "
        f"{args.seeds} seeds\n"
    )
    print("| aggregation | final accuracy (mean ± sd) | vs the clean run |")
    print("|---|---:|---:|")
    for label, accs in results.items():
        print(
            f"| {label} | {100 * np.mean(accs):.2f} ± {100 * np.std(accs):.2f} % | "
            f"{100 * (np.mean(accs) - clean):+.2f} pts |"
        )


if __name__ == "__main__":
    main()
