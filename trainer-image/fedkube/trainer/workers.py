"""A site trained by several processes (``spec.pods.trainer.workers``): the site's trainer is
rank 0 of a torch.distributed group. It starts the other ranks beside it
(``python -m fedkube.trainer.workers``, the task as JSON on stdin), or, on Kubernetes, waits
for the site's worker pods (``fedkube trainer-worker``) on ``--workers-port``. Only rank 0
talks to the aggregator; the others train.

Rank 0 hands the workers what they train on once, at the start: the site's preprocessed
training rows (the same rows its own loop reads; they stay in the site's processes or pods).
Every round it sends a command (the round's seed and FedProx's strength, or DP-SGD's noise
and clip) and its parameters, and all ranks run ``ddp_loop``'s loop together. A worker ends
when rank 0 says stop or goes away (a local worker dies with its parent).

Rendezvous is torch's TCP store on rank 0; the backend is NCCL with a GPU per rank, gloo on
CPUs and for ranks that share a GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fedkube.errors import JobFailed
from fedkube.models.plugins import PluginPolicy
from fedkube.models.registry import build_model
from fedkube.processes import child_env, die_with_parent_if_asked, free_port
from fedkube.spec.task import TaskSpec
from fedkube.trainer.ddp_loop import ddp_dp_sgd_train, ddp_train, sync_from_rank0
from fedkube.trainer.device import resolve_device
from fedkube.trainer.local import LocalTrainer, TrainConfig, default_train

log = logging.getLogger("fedkube.trainer")
TRAIN, DP_TRAIN, STOP = 1, 2, 3
# A worker waits for rank 0's next command as long as a round may take to come.
COLLECTIVE_TIMEOUT = timedelta(days=7)


def _backend(device: torch.device, world: int) -> str:
    """NCCL with a GPU for each rank; gloo on CPUs, and for ranks that share a GPU (NCCL
    refuses two ranks on one device)."""
    cuda = device.type == "cuda"
    return "nccl" if cuda and torch.cuda.device_count() >= world else "gloo"


def _rank_device(task: TaskSpec, rank: int) -> torch.device:
    device = resolve_device(task.device)
    if device.type != "cuda":
        return device
    return torch.device("cuda", rank % torch.cuda.device_count())


class WorkerGroup:
    """Rank 0's side: the workers it started, and the training function that drives them."""

    def __init__(
        self,
        trainer: LocalTrainer,
        workers: int,
        plugins: PluginPolicy,
        listen_port: int | None = None,
    ) -> None:
        """Start ranks 1..N-1 here, or, with ``listen_port``, wait there for them to join (a
        site's worker pods, started by the operator: ``fedkube trainer-worker``)."""
        self.trainer = trainer
        port = listen_port or free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        if listen_port is None:
            task = trainer.task.model_dump(mode="json", by_alias=True)
            request = json.dumps({"task": task, "allowedImports": list(plugins.allowed)})
            where = ["--world", str(workers), "--rendezvous", f"tcp://127.0.0.1:{port}"]
            for rank in range(1, workers):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "fedkube.trainer.workers", "--rank", str(rank), *where],
                    stdin=subprocess.PIPE,
                    env=child_env(dict(os.environ)),
                )
                assert proc.stdin is not None
                proc.stdin.write(request.encode())
                proc.stdin.close()
                self.procs.append(proc)
        dist.init_process_group(
            _backend(trainer.device, workers),
            init_method=f"tcp://127.0.0.1:{port}",
            rank=0,
            world_size=workers,
            timeout=COLLECTIVE_TIMEOUT,
        )
        x, y = trainer.x_train, trainer.y_train
        if x.dtype != torch.float32 or y.dtype != torch.int64:
            raise JobFailed(
                f"a site's workers train on float32 rows and int64 labels, not {x.dtype} and "
                f"{y.dtype}"
            )
        shape = torch.tensor(
            [len(y), x.shape[1], trainer.data.num_features, trainer.data.num_classes]
        )
        dist.broadcast(shape.to(trainer.device), src=0)
        dist.broadcast(x.contiguous(), src=0)
        dist.broadcast(y.contiguous(), src=0)
        self.ddp = DistributedDataParallel(trainer.model)
        atexit.register(self.stop)
        log.info(
            "site %s trains with %d workers (torch.distributed, %s; %d rows each round)",
            trainer.site,
            workers,
            dist.get_backend(),
            len(y),
        )

    def train(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig
    ) -> dict[str, float]:
        """A ``TrainFunction``: the site's model trained by every rank; any other model (a
        personal one) by this process alone."""
        if model is not self.trainer.model:
            return default_train(model, x, y, config)
        command = torch.tensor([TRAIN, config.seed, config.round], dtype=torch.int64)
        dist.broadcast(command.to(x.device), src=0)
        dist.broadcast(torch.tensor([config.proximal_mu], dtype=torch.float64).to(x.device), 0)
        sync_from_rank0(model)
        return ddp_train(self.ddp, x, y, config)

    def dp_train(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **settings: Any
    ) -> dict[str, Any]:
        """DP-SGD's loop (``dp_sgd.dp_sgd_train``'s arguments), run by every rank."""
        command = torch.tensor([DP_TRAIN, 0, 0], dtype=torch.int64)
        dist.broadcast(command.to(x.device), src=0)
        noise = [settings["noise_multiplier"], settings["max_grad_norm"]]
        dist.broadcast(torch.tensor(noise, dtype=torch.float64).to(x.device), src=0)
        sync_from_rank0(model)
        return ddp_dp_sgd_train(model, x, y, **settings)

    def stop(self) -> None:
        """Tell the workers to end, and wait for them."""
        if not dist.is_initialized():
            return
        with contextlib.suppress(RuntimeError):
            command = torch.tensor([STOP, 0, 0], dtype=torch.int64)
            dist.broadcast(command.to(self.trainer.device), src=0)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        dist.destroy_process_group()


def start_workers(
    trainer: LocalTrainer, workers: int, plugins: PluginPolicy, listen_port: int | None = None
) -> WorkerGroup:
    """Start the site's other ranks (or, with ``listen_port``, wait for them to join); its
    training loops (plain and DP-SGD) then run them with rank 0."""
    if trainer.train_fn is not default_train:
        raise JobFailed("a site's workers run the built-in training loop, not task.trainFunction")
    group = WorkerGroup(trainer, workers, plugins, listen_port)
    trainer.train_fn = group.train
    trainer.dp_train_fn = group.dp_train
    return group


def serve(task: TaskSpec, plugins: PluginPolicy, rank: int, world: int, rendezvous: str) -> int:
    """A worker: receive the rows, then train when rank 0 says, until it says stop."""
    device = _rank_device(task, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    dist.init_process_group(
        _backend(device, world),
        init_method=rendezvous,
        rank=rank,
        world_size=world,
        timeout=COLLECTIVE_TIMEOUT,
    )
    shape = torch.zeros(4, dtype=torch.int64, device=device)
    dist.broadcast(shape, src=0)
    rows, width, features, classes = (int(v) for v in shape.tolist())
    x = torch.empty((rows, width), dtype=torch.float32, device=device)
    y = torch.empty(rows, dtype=torch.int64, device=device)
    dist.broadcast(x, src=0)
    dist.broadcast(y, src=0)
    model = build_model(task, features, classes, plugins).to(device)
    ddp = DistributedDataParallel(model)
    while True:
        command = torch.zeros(3, dtype=torch.int64, device=device)
        dist.broadcast(command, src=0)
        op, seed, round_number = (int(v) for v in command.tolist())
        if op == STOP:
            break
        if op == DP_TRAIN:
            noise = torch.zeros(2, dtype=torch.float64, device=device)
            dist.broadcast(noise, src=0)
            sync_from_rank0(model)
            ddp_dp_sgd_train(
                model,
                x,
                y,
                learning_rate=task.learning_rate,
                batch_size=task.batch_size,
                epochs=task.local_epochs,
                noise_multiplier=float(noise[0]),
                max_grad_norm=float(noise[1]),
            )
            continue
        mu = torch.zeros(1, dtype=torch.float64, device=device)
        dist.broadcast(mu, src=0)
        sync_from_rank0(model)
        config = TrainConfig(
            round=round_number,
            local_epochs=task.local_epochs,
            batch_size=task.batch_size,
            learning_rate=task.learning_rate,
            optimizer=task.optimizer,
            momentum=task.momentum,
            seed=seed,
            proximal_mu=float(mu[0]),
            mixed_precision=task.mixed_precision,
        )
        ddp_train(ddp, x, y, config)
    dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m fedkube.trainer.workers", description=__doc__)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--rendezvous", required=True, help="tcp://host:port of rank 0's store")
    args = p.parse_args(argv)
    die_with_parent_if_asked()
    torch.set_num_threads(int(os.environ.get("FEDKUBE_TORCH_THREADS", "1")) or 1)
    request = json.loads(sys.stdin.buffer.read())
    task = TaskSpec.model_validate(request["task"])
    plugins = PluginPolicy(tuple(request["allowedImports"]))
    return serve(task, plugins, args.rank, args.world, args.rendezvous)


if __name__ == "__main__":
    sys.exit(main())
