"""What the aggregator can read from one site's update, with and without secure aggregation.

    python bench/gradient_inversion.py [--sites 10] [--plot bench/out/gradient_inversion.png]

Each site holds one record (a digits image standing in for a patient) and trains the global
model on it with fedkube's own trainer: one SGD step on a batch of one. For a first layer
z = W x + b, that step changes row i of W by -lr * dL/dz_i * x and b_i by -lr * dL/dz_i, so
any row with a non-zero bias change gives the record back exactly: x = dW_i / db_i
(the analytic attack of Phong et al. 2017, the seed of Zhu et al. 2019 and Geiping et al. 2020).

The same attack is run on what the aggregator holds in each setting:
- plain FedAvg: site 0's update, as it arrives;
- secure aggregation: site 0's masked update (all the aggregator ever holds of it), read as
  if it were the fixed-point update, and the unmasked sum of every site's update;
- the sum again with update-level DP, the noise shared among the sites. A sum can still show
  one record where one site dominates a neuron's change: secure aggregation hides each update,
  DP bounds what any sum tells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from fedkube.data.site_data import SiteData
from fedkube.models.registry import initial_params
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.encoding import FixedPoint
from fedkube.secagg.keys import Context
from fedkube.secagg.server import SecureSum
from fedkube.secagg.site import SiteSession
from fedkube.spec.task import TaskSpec
from fedkube.trainer.local import LocalTrainer
from fedkube.wire.tensors import Params

TASK = TaskSpec.model_validate(
    {
        "model": {"name": "mlp", "hiddenSizes": [32]},
        "localEpochs": 1,
        "batchSize": 1,
        "learningRate": 0.1,
        "optimizer": "sgd",
        "seed": 7,
    }
)


def invert_first_layer(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The record behind a batch-of-one update of the first layer (the row with the largest
    bias change: the best conditioned)."""
    i = int(np.argmax(np.abs(bias)))
    return weight[i].astype(np.float64) / float(bias[i])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def site_updates(n: int) -> tuple[list[np.ndarray], list[Params], Params]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(3)
    picks = rng.choice(len(digits.target), size=n + 1, replace=False)
    x = (digits.data[picks] / 16.0).astype(np.float32)
    y = digits.target[picks].astype(np.int64)
    global_params = initial_params(TASK, 64, 10)
    records, updates = [], []
    for s in range(n):
        data = SiteData(x[s : s + 1], y[s : s + 1], x[n : n + 1], y[n : n + 1], 64, 10)
        trainer = LocalTrainer(TASK, data, f"site-{s}")
        update, _ = trainer.train(global_params, 1, {})
        records.append(x[s].astype(np.float64))
        updates.append(update)
    return records, updates, global_params


def secure_round(
    updates: list[Params], noise_multiplier: float = 0.0
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Site 0's masked update and the unmasked weighted mean, through the real protocol;
    with a noise multiplier, the sites also clip to the median update norm and share the
    DP-FedAvg noise (as fedkube does under privacy.updateLevel)."""
    n = len(updates)
    threshold = n // 2 + 1
    params = pb.SecAggParams(threshold=threshold, clip_range=8.0)
    if noise_multiplier > 0:
        norms = [
            np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in u.values()))
            for u in updates
        ]
        params.clip_norm = float(np.median(norms))
        params.noise_stddev = noise_multiplier * params.clip_norm / np.sqrt(threshold)
        params.equal_weights = True
    context = Context("inversion", 1, 1)
    names = [f"site-{i}" for i in range(n)]
    sessions = {s: SiteSession(context.job, s, 1, 1, params) for s in names}
    sizes = [v.size for v in updates[0].values()]
    server = SecureSum(context, params, sizes)
    for s in names:
        server.advertise(sessions[s].advertisement(0, 1))
    roster = server.close_roster(names)
    for s in names:
        server.add_shares(sessions[s].share_keys(roster))
    masked0: list[np.ndarray] = []
    for i, s in enumerate(names):
        sessions[s].receive_shares(server.inbox(s))
        masked = sessions[s].masked_update(list(updates[i].values()))
        if i == 0:
            masked0 = [m.reshape(-1) for m in masked]
        for t, values in enumerate(masked):
            server.fold(t, 0, values.reshape(-1))
        server.commit(s)
    survivors, dropped = server.unmask_request()
    for s in names:
        server.add_reveal(sessions[s].reveal(survivors, dropped))
    mean, _ = server.unmask()
    return masked0, mean, 1.0 / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--plot", default=str(Path(__file__).parent / "out" / "gradient_inversion.png"))
    args = ap.parse_args()
    records, updates, _ = site_updates(args.sites)
    names = list(updates[0])
    w_name, b_name = names[0], names[1]  # the first layer's weight and bias
    shape = updates[0][w_name].shape

    plain = invert_first_layer(updates[0][w_name], updates[0][b_name])

    masked0, mean, weight = secure_round(updates)
    fixed = FixedPoint(8.0)
    # The masked values read as the site's fixed-point update (weight 1/n folded in).
    as_update = [fixed.decode(m) / weight for m in masked0]
    from_masked = invert_first_layer(as_update[0].reshape(shape), as_update[1])
    from_sum = invert_first_layer(mean[0].reshape(shape), mean[1])
    _, noised, _ = secure_round(updates, noise_multiplier=1.0)
    from_noised_sum = invert_first_layer(noised[0].reshape(shape), noised[1])

    print(
        f"{args.sites} sites, one record each (digits, 64 pixels), MLP 64-32-10, one SGD step "
        "on a batch of one; the attack targets site 0\n"
    )
    print(
        "| what the aggregator inverts | max abs error vs site 0's record | cosine with site 0 "
        "| best cosine with any site's record |"
    )
    print("|---|---:|---:|---:|")
    for label, guess in (
        ("plain FedAvg: site 0's update", plain),
        ("secure aggregation: site 0's masked update", from_masked),
        ("secure aggregation: the unmasked sum of all sites", from_sum),
        ("secure aggregation + DP noise (z = 1) shared by the sites: the sum", from_noised_sum),
    ):
        err = float(np.max(np.abs(guess - records[0])))
        best = max(cosine(guess, r) for r in records)
        print(f"| {label} | {err:.3g} | {cosine(guess, records[0]):.4f} | {best:.4f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    images = [
        ("site 0's record", records[0]),
        ("from its update\n(plain FedAvg)", plain),
        ("from its masked update\n(secure aggregation)", from_masked),
        ("from the sum\n(secure aggregation)", from_sum),
        ("from the sum, DP noise z=1\n(secure aggregation)", from_noised_sum),
    ]
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 3))
    for ax, (title, image) in zip(axes, images, strict=True):
        ax.imshow(image.reshape(8, 8), cmap="gray_r")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
