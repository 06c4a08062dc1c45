"""Runs the job in $PEERS_JOB_DIR with NVIDIA FLARE 2.9's PyTorch FedAvg recipe, in its
simulator (``--env sim``) or its POC mode (``--env poc``: a server and a client per site as
separate processes, started by FLARE, talking over its own network layer). Run in FLARE's
virtual environment by run.py; the final global model lands in ``flare-global.npz``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import peer_models
import site_task
from nvflare.app_opt.pt.file_model_persistor import PTFileModelPersistor
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.recipe import PocEnv, SimEnv

HERE = Path(__file__).resolve().parent


class NpzPersistor(PTFileModelPersistor):
    """FLARE's own persistor, which also writes the global weights as numpy arrays (.npz), so
    that run.py reads the final model without unpickling FLARE's checkpoint."""

    def save_model(self, ml: Any, fl_ctx: Any) -> None:
        super().save_model(ml, fl_ctx)
        # The persistence manager's variables: the whole model as FLARE now holds it.
        weights = self._get_persistence_manager(fl_ctx).var_dict
        site_task.save_global(weights, Path(os.environ["PEERS_JOB_DIR"]) / "flare-global.npz")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", choices=["sim", "poc"], required=True)
    ap.add_argument("--workspace", type=Path, required=True)
    args = ap.parse_args()
    job = site_task.load_job()
    class_path, class_args = peer_models.class_spec(
        job["model"], job["numFeatures"], job["numClasses"], job["params"]
    )
    model = {"class_path": class_path, "args": class_args}
    recipe = FedAvgRecipe(
        name=f"peers-{job['name']}",
        model=model,
        min_clients=job["sites"],
        num_rounds=job["rounds"],
        train_script=str(HERE / "flare_client.py"),
        model_persistor=NpzPersistor(model=model),
    )
    if args.env == "sim":
        env = SimEnv(num_clients=job["sites"], workspace_root=str(args.workspace))
    else:
        env = PocEnv(num_clients=job["sites"])
    run = recipe.execute(env)
    result = run.get_result()
    status = run.get_status()
    print(f"FLARE {args.env}: status {status}, result {result}", flush=True)
    if not (site_task.job_dir() / "flare-global.npz").exists():
        sys.exit("FLARE ended without a global model")


if __name__ == "__main__":
    main()
