"""A 10-million-parameter model: how fast it moves, and how much memory the aggregator needs
for it as sites grow.

    python bench/large_model_memory.py [--trainers 5] [--sites 10 30 100] [--rounds 3]
                                       [--upload-window 4096 64] [--params 10.2e6 100e6]

1. **Wire speed.** Real `fedkube trainer` processes (5 by default) train the model on digits;
   each round's time beyond the slowest site's training is spent moving models down and
   updates up. The effective transfer rate is the round's bytes over that time.
2. **Memory.** The aggregator's idle resident memory (its first model built, by a child
   process: the aggregator imports no torch; waiting for sites) and its high-water mark
   (VmHWM, reset at that point) while 10, 30 and 100 synthetic sites (`fedkube.loadtest`:
   real gRPC clients, one connection each, no torch) fetch the model and send full-size
   updates, with the growth against the first row, and what it held with every site
   connected, before round 1 opened (the connections alone); once per upload window (the
   default 4 MiB, which the uploads holding a slot fill on loopback, and gRPC's own 64 KiB),
   and per model size (`--params 10.2e6 100e6`: what grows with the sites does not grow with
   the model, so its share shrinks as the model grows).

No message is over 4 MiB: tensors travel in 1 MiB chunks.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

from fedkube.aggregator.transfer_pace import UPLOAD_WINDOW_KIB
from fedkube.loadtest import Churn, load_manifest, mlp_parameters, run_load
from fedkube.testing import LocalJob, manifest
from wire_speed import hidden_for

HIDDEN = [3160, 3160]  # digits: 64 -> 3160 -> 3160 -> 10, about 10.2 M parameters


def wire_speed(trainers: int, rounds: int, tmp: Path) -> None:
    doc = manifest(
        "big-wire",
        sites=trainers,
        rounds=rounds,
        dataset="digits",
        min_sites=trainers,
        model={"name": "mlp", "hiddenSizes": HIDDEN},
        timeout=900,
        joinGraceSeconds=600,
    )
    doc["spec"]["task"].update(batchSize=64, learningRate=0.01)
    folder = tmp / "wire"
    folder.mkdir()
    result = LocalJob(folder, doc).run(timeout=1200)
    print(
        "| round | round (s) | slowest training (s) | moving (s) | down (MB) | up (MB) "
        "| effective rate (MiB/s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rates = []
    for h in result.history:
        moving = h.duration_seconds - h.max_train_seconds
        moved = h.bytes_sent + h.bytes_received
        rates.append(moved / 2**20 / moving)
        print(
            f"| {h.round} | {h.duration_seconds:.2f} | {h.max_train_seconds:.2f} | {moving:.2f} "
            f"| {h.bytes_sent / 1e6:.0f} | {h.bytes_received / 1e6:.0f} | {rates[-1]:.0f} |"
        )
    print(f"\nmedian effective rate: {statistics.median(rates):.0f} MiB/s\n", flush=True)


def hidden(params: float) -> list[int]:
    """The wire-speed model's layers for about its size (the figures before ``--params``
    were of it), others sized as ``bench/wire_speed.py`` sizes them."""
    return (
        HIDDEN if round(params / 1e5) == round(mlp_parameters(HIDDEN) / 1e5) else hidden_for(params)
    )


def memory(
    sizes: list[float], sites: list[int], windows: list[int], rounds: int, tmp: Path
) -> None:
    print(
        "| parameters | upload window | sites | aggregator idle (MiB) | sites connected (MiB) "
        "| peak (MiB) | peak - idle (MiB) | (peak - idle) / model | against the fewest sites "
        "| median round (s) | threads | fds |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, window in itertools.product(sizes, windows):
        layers = hidden(size)
        params = mlp_parameters(layers)
        first = None
        for n in sites:
            doc = load_manifest(f"big-{n}", n, rounds, layers)
            folder = tmp / f"memory-{params}-{n}-window-{window}"
            folder.mkdir()
            flags = ["--upload-window", str(window)]
            run = run_load(folder, doc, min(4, n), Churn(), aggregator_args=flags)
            assert run.counters.model_sum_disagreements == 0
            assert max(run.sum_errors(params)) < 1e-6
            extra = run.peak_bytes - run.idle_bytes
            first = first or extra
            round_s = statistics.median(h.duration_seconds for h in run.result.history)
            print(
                f"| {params / 1e6:.1f} M | {window} KiB | {n} | {run.idle_bytes / 2**20:.0f} "
                f"| {run.connected_bytes / 2**20:.0f} "
                f"| {run.peak_bytes / 2**20:.0f} | {extra / 2**20:.0f} "
                f"| {extra / (params * 4):.2f}x | {extra / first - 1:+.1%} | {round_s:.1f} "
                f"| {run.threads} | {run.fds} |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainers", type=int, default=5, help="real trainers for wire speed")
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 30, 100])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--upload-window",
        type=int,
        nargs="+",
        default=[UPLOAD_WINDOW_KIB, 64],
        help="the aggregator's upload windows (KiB) to measure memory with",
    )
    ap.add_argument(
        "--params",
        type=float,
        nargs="+",
        default=[mlp_parameters(HIDDEN)],
        help="model sizes (parameters) to measure the aggregator's memory with",
    )
    ap.add_argument("--skip-wire", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    for layers in sorted({tuple(hidden(p)) for p in [mlp_parameters(HIDDEN), *args.params]}):
        params = mlp_parameters(list(layers))
        print(
            f"model: MLP 64-{layers[0]}-{layers[1]}-10, {params:,} parameters, "
            f"{params * 4 / 2**20:.1f} MiB as float32"
        )
    print("chunks of 1 MiB on the wire\n")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_wire:
            print(f"## Wire speed: {args.trainers} real trainers\n")
            wire_speed(args.trainers, args.rounds, Path(tmp))
        if not args.skip_memory:
            print("## Aggregator memory: synthetic sites\n")
            memory(args.params, args.sites, args.upload_window, max(2, args.rounds - 1), Path(tmp))


if __name__ == "__main__":
    main()
