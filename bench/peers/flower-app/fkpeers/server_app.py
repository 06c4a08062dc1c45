"""Flower's side of the job: its own FedAvg strategy over every site each round (no federated
evaluation: run.py scores the final model), the final arrays saved as global.npz in the job's
folder."""

from __future__ import annotations

import site_task
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    job = site_task.load_job()
    model = site_task.build_model(job)
    sites = job["sites"]
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=sites,
        min_evaluate_nodes=0,
        min_available_nodes=sites,
    )
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=job["rounds"]
    )
    site_task.save_global(
        result.arrays.to_torch_state_dict(), site_task.job_dir() / "flower-global.npz"
    )
