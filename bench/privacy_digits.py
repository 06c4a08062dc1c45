"""Record-level DP-SGD on digits: held-out accuracy against the epsilon each site spends.

    python bench/privacy_digits.py [--rounds 30] [--seeds 2]

Five IID sites, MLP 64-32-10, one local epoch of DP-SGD (Opacus) per round with batches of 32
and per-example clipping at 1.0. For each target epsilon (delta 1e-5) the noise multiplier is
the smallest that keeps a site's whole run within it (the accountant decides); the run uses the
in-process twin of `fedkube run`.
"""

from __future__ import annotations

import argparse

import numpy as np
from fedkube.spec.job import JobSpec
from fedkube.wire.tensors import Params


def pooled_accuracy(spec: JobSpec, params: Params) -> float:
    """The model's accuracy over every site's held-out split together."""
    from fedkube.data import load_site_data
    from fedkube.stats.score_counts import scores
    from fedkube.trainer.local import LocalTrainer

    counts = [
        LocalTrainer(spec.task, load_site_data(spec, s.name), s.name).evaluate(params).counts
        for s in spec.sites
    ]
    return scores(np.sum(counts, axis=0))[1]["accuracy"]


def main() -> None:
    import torch
    from fedkube.data import load_site_data
    from fedkube.privacy.accountant import noise_for_epsilon
    from fedkube.simulation import simulate
    from fedkube.spec import parse_job
    from fedkube.testing import manifest
    from fedkube.trainer.dp_sgd import dp_steps

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    delta = 1e-5
    print(
        f"digits, 5 IID sites, MLP 64-32-10, {args.rounds} rounds, DP-SGD batch 32, clip 1.0, "
        f"delta {delta:g}, {args.seeds} seeds\n"
    )
    print(
        "| target epsilon | noise multiplier | epsilon spent (max over sites) "
        "| accuracy (mean ± sd) |"
    )
    print("|---:|---:|---:|---:|")
    for target in (1.0, 4.0, 8.0, None):
        accs, spent, z = [], [], None
        for seed in range(args.seeds):
            doc = manifest(
                "dp", sites=5, rounds=args.rounds, dataset="digits", model={"name": "mlp"}
            )
            doc["spec"]["task"].update(learningRate=0.2, batchSize=32, seed=seed)
            for s in doc["spec"]["sites"]:
                s["data"]["sklearn"]["seed"] = seed
            if target is not None:
                spec = parse_job(doc).spec
                n = min(len(load_site_data(spec, s.name).y_train) for s in spec.sites)
                q, steps = dp_steps(n, 32, 1)
                z = noise_for_epsilon(target, q, steps * args.rounds, delta)
                doc["spec"]["privacy"] = {
                    "recordLevel": {"noiseMultiplier": z, "maxGradNorm": 1.0, "delta": delta}
                }
            job = parse_job(doc)
            result = simulate(job)
            # A DP job sends no site's scores (they stay at the sites): the bench, which holds
            # every site's data, scores the final model on the pooled held-out splits.
            accs.append(pooled_accuracy(job.spec, result.params))
            spent.append(max(m.get("epsilon", 0.0) for m in result.sites.values()))
        label = "no DP" if target is None else f"{target:g}"
        zs = "-" if z is None else f"{z:.3f}"
        eps = "-" if target is None else f"{max(spent):.3f}"
        print(
            f"| {label} | {zs} | {eps} | {100 * np.mean(accs):.2f} ± {100 * np.std(accs):.2f} % |",
            flush=True,
        )


if __name__ == "__main__":
    main()
