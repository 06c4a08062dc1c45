"""Runs the Flower app (flower-app/) in Flower's simulation runtime, in this process: Ray
actors play the sites. Run in Flower's virtual environment by run.py. Flower's default gives
each simulated site 2 CPUs, which on a 2-core machine runs one site at a time; this gives each
one CPU, so that two train at once, as every other system here does."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "flower-app"))

import site_task
from fkpeers.client_app import app as client_app
from fkpeers.server_app import app as server_app
from flwr.simulation import run_simulation


def main() -> None:
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=site_task.load_job()["sites"],
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )


if __name__ == "__main__":
    main()
