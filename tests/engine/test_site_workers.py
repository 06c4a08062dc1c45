"""A site trained by several processes (``spec.pods.trainer.workers``, torch.distributed DDP
over gloo): the update two workers train equals one process's with the same batchSize,
within float rounding, and a job whose sites each run two workers succeeds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedkube.cli.launch import free_port
from fedkube.data.site_data import load_site_data
from fedkube.models.registry import initial_params
from fedkube.spec import parse_job
from fedkube.storage.safetensors_file import read_safetensors
from fedkube.testing import LocalJob, manifest
from fedkube.trainer.local import default_train
from fedkube.trainer.site import site_trainer


def _job(workers: int, **spec: Any) -> dict[str, Any]:
    doc = manifest(
        sites=2,
        rounds=2,
        min_sites=2,
        model={"name": "mlp", "hiddenSizes": [16]},
        local_epochs=2,
        **spec,
    )
    # 227 training rows in batches of 20: the last batch (7) splits 4 and 3.
    doc["spec"]["task"]["batchSize"] = 20
    doc["spec"]["pods"] = {"trainer": {"workers": workers}}
    return doc


@pytest.mark.parametrize(
    "strategy", [{"name": "fedavg"}, {"name": "fedprox", "mu": 0.5}], ids=["plain", "fedprox"]
)
def test_two_workers_train_the_update_one_process_trains(strategy: dict[str, Any]) -> None:
    updates, metrics = [], []
    for workers in (1, 2):
        job = parse_job(_job(workers, strategy=strategy))
        data = load_site_data(job.spec, "site-0")
        features, classes = job.spec.input_shape()
        start = initial_params(job.spec.task, features, classes)
        trainer = site_trainer(job, "site-0", data)
        try:
            assert (trainer.train_fn is default_train) == (workers == 1)
            for round_number in (1, 2):  # the second round starts from the first's model
                update, m = trainer.train(copy.deepcopy(start), round_number, {})
                start = {k: start[k] + update[k] for k in start}
            updates.append(update)
            metrics.append(m)
        finally:
            if workers > 1:
                trainer.train_fn.__self__.stop()  # type: ignore[attr-defined]
    one, two = updates
    assert list(one) == list(two)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert metrics[1]["local_steps"] == metrics[0]["local_steps"]
    for key in ("train_loss", "train_accuracy"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-5), key


@pytest.mark.parametrize("batch", [20, 2], ids=["batches-of-20", "batches-of-2"])
def test_two_workers_take_one_processs_dp_sgd_steps(
    monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """DP-SGD across two processes: rank 0 draws the Poisson batches and adds the noise once,
    each rank clips its slice. With the site's secret generators seeded alike in both runs
    (here only: they come from the OS), the update is one process's, noise included. Batches
    of about 2 leave one rank's slice empty at many steps."""
    import torch
    from fedkube.trainer import ddp_loop, dp_sgd

    seeds: list[int] = []

    def seeded(device: torch.device | None = None) -> torch.Generator:
        seeds.append(len(seeds))
        return torch.Generator(device=device or "cpu").manual_seed(1000 + seeds[-1])

    monkeypatch.setattr(dp_sgd, "secret_generator", seeded)
    monkeypatch.setattr(ddp_loop, "secret_generator", seeded)
    updates, metrics = [], []
    for workers in (1, 2):
        doc = _job(workers)
        doc["spec"]["task"].update(batchSize=batch, localEpochs=1)
        doc["spec"]["privacy"] = {"recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0}}
        job = parse_job(doc)
        data = load_site_data(job.spec, "site-0")
        start = initial_params(job.spec.task, *job.spec.input_shape())
        trainer = site_trainer(job, "site-0", data)
        seeds.clear()
        try:
            update, m = trainer.train(copy.deepcopy(start), 1, {})
        finally:
            if workers > 1:
                trainer.train_fn.__self__.stop()  # type: ignore[attr-defined]
        assert seeds == [0, 1], "one noise and one sampling generator, drawn by rank 0"
        updates.append(update)
        metrics.append(m)
    one, two = updates
    moved = max(float(np.abs(v).max()) for v in one.values())
    assert moved > 1e-3  # it trained, noise and all
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert metrics[1]["dp_steps"] == metrics[0]["dp_steps"]
    assert metrics[1]["epsilon"] == metrics[0]["epsilon"]
    assert metrics[1]["train_loss"] == pytest.approx(metrics[0]["train_loss"], rel=1e-5)


def test_a_job_whose_sites_run_two_workers_succeeds_with_one_processs_model(
    tmp_path: Path,
) -> None:
    results = {}
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        job = LocalJob(folder, _job(workers))
        results[workers] = job.run(timeout=300)
        said = "site site-0 trains with 2 workers (torch.distributed, gloo"
        assert (said in job.log("site-0")) == (workers == 2)
    one, two = results[1], results[2]
    assert two.rounds_completed == one.rounds_completed == 2
    assert all(sorted(h.sites) == ["site-0", "site-1"] for h in two.history)
    model_one, _ = read_safetensors(Path(one.model_path))
    model_two, _ = read_safetensors(Path(two.model_path))
    for name, value in model_one.items():
        np.testing.assert_allclose(model_two[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_workers_started_elsewhere_join_a_trainer_that_waits_for_them(tmp_path: Path) -> None:
    """The worker pods' path: each site's trainer waits on --workers-port, and a separate
    `fedkube trainer-worker` process (as the operator starts in a pod of its own) joins it."""
    job = LocalJob(tmp_path, _job(2))
    ports = {site: free_port() for site in ("site-0", "site-1")}
    for site, port in ports.items():
        job.trainer_args[site] = ["--workers-port", str(port)]
    try:
        job.start_all()
        for site, port in ports.items():
            args = ["trainer-worker", "--manifest", str(job.path), "--site", site, "--rank", "1"]
            args += ["--rendezvous", f"tcp://127.0.0.1:{port}"]
            job.trainers[f"{site}-w1"] = job._spawn(f"{site}-w1", args)
        result = job.wait_done(timeout=300)
        codes = {name: p.wait(60) for name, p in job.trainers.items()}
    finally:
        job.stop()
    assert result.rounds_completed == 2
    assert codes == {"site-0": 0, "site-1": 0, "site-0-w1": 0, "site-1-w1": 0}
    assert "trains with 2 workers" in job.log("site-1")
