"""The GPU path, prepared for a lent GPU machine: the imaging job (ResNet-18, about 11.2 M
parameters, on the images `imaging_data.py` makes) with ``task.device: cuda``,
``mixedPrecision`` and two workers per site, as real processes (one aggregator, a trainer per
site, its worker beside it); round times and accuracy per round.

    python bench/gpu_imaging.py                       # on a GPU machine
    python bench/gpu_imaging.py --device cpu --width 8 --rows 64 --rounds 1   # a CPU smoke

Two workers share one GPU when the machine has one (gloo between them; NCCL needs a GPU per
worker and is used when there are enough). Prints the device, each round's time, the slowest
site's training in it, and the global model's accuracy on the sites' held-out images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from imaging_data import write_site_files  # noqa: E402


def job(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    side = 32
    files = write_site_files(folder, args.sites, args.rows, side=side)
    return {
        "apiVersion": "fedkube.io/v1alpha1",
        "kind": "FederatedJob",
        "metadata": {"name": "imaging"},
        "spec": {
            "rounds": args.rounds,
            "minSitesPerRound": args.sites,
            "roundTimeoutSeconds": 3600,
            "joinGraceSeconds": 600,
            "task": {
                "model": {
                    "importPath": "imaging_models:resnet18",
                    "params": {"channels": 3, "width": args.width},
                },
                "numFeatures": 3 * side * side,
                "numClasses": 10,
                "localEpochs": args.epochs,
                "batchSize": args.batch,
                "learningRate": 0.05,
                "momentum": 0.9,
                "optimizer": "sgd",
                "device": args.device,
                "mixedPrecision": args.device == "cuda",
                "seed": 1,
            },
            "pods": {"trainer": {"workers": args.workers}},
            "sites": [
                {
                    "name": f"site-{i}",
                    "data": {
                        "file": {"path": path.name, "labelColumn": "y"},
                        "standardize": "none",
                    },
                }
                for i, path in enumerate(files)
            ],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--rows", type=int, default=4000, help="images per site")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=64, help="ResNet width (64: ResNet-18)")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    import torch
    from fedkube.testing import LocalJob

    seen = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {seen}; device {args.device}")
    with tempfile.TemporaryDirectory(prefix="fedkube-imaging-") as tmp:
        folder = Path(tmp)
        local = LocalJob(folder, job(folder, args))
        allow = ["--allow-import", "imaging_models:*"]
        local.aggregator_args = allow
        local.trainer_args = {f"site-{i}": allow for i in range(args.sites)}
        started = time.monotonic()
        result = local.run(timeout=7200)
        wall = time.monotonic() - started
        print(f"\n{args.sites} sites x {args.rows} images, {args.workers} workers each, "
              f"batch {args.batch}, width {args.width}\n")  # fmt: skip
        print("| round | round (s) | slowest training (s) | accuracy | loss |")
        print("|---:|---:|---:|---:|---:|")
        for h in result.history:
            acc = f"{h.accuracy:.3f}" if h.accuracy is not None else "-"
            loss = f"{h.loss:.3f}" if h.loss is not None else "-"
            print(f"| {h.round} | {h.duration_seconds:.2f} | {h.max_train_seconds:.2f} "
                  f"| {acc} | {loss} |")  # fmt: skip
        final = result.global_
        print(
            f"\nfinal accuracy {final.accuracy if final else float('nan'):.3f}; wall {wall:.0f} s"
        )
        said = "trains with" in local.log("site-0")
        print(f"site-0's trainer ran {args.workers} workers: {said or args.workers == 1}")


if __name__ == "__main__":
    main()
