"""How each system runs a job, as its own documentation shows, each in its own virtual
environment (made here on first use, keyed by version): fedkube (`fedkube run`: an aggregator
and a trainer per site as processes, gRPC on loopback), Flower 1.42 (its deployment runtime:
a SuperLink, a SuperNode per site, `flwr run`; and its simulation runtime), NVIDIA FLARE 2.9
(its PyTorch FedAvg recipe in POC mode: a server and a client per site as processes; and in
its simulator). Every launcher returns once the final global model is written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedkube.processes import free_port
from measure import wait_for

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
VENVS = Path(os.environ.get("FEDKUBE_PEERS_CACHE", Path.home() / ".cache" / "fedkube-peers"))
TORCH = (
    "torch==2.15.0"  # fedkube's pin: pip's cache serves it, and every system runs the same torch
)
PEERS = {
    "flwr-1.42": ["flwr[simulation]==1.42.0", TORCH],
    "nvflare-2.9": ["nvflare==2.9.0", TORCH],
}


def venv(name: str) -> Path:
    """The peer's virtual environment's bin folder, installed from PyPI if missing."""
    root = VENVS / name
    done = root / ".installed"
    if not done.exists():
        print(f"installing {' '.join(PEERS[name])} into {root}", flush=True)
        # System site-packages lend it torch (several GB) when the machine has the same pin.
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True
        )
        subprocess.run([str(root / "bin" / "pip"), "install", "-q", *PEERS[name]], check=True)
        done.touch()
    return root / "bin"


@dataclass
class Run:
    job_dir: Path
    work: Path  # this system's scratch folder for this job
    env: dict[str, str]
    logs: Path

    def popen(self, argv: list[str], log: str, **env: str) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{log}.log", "wb")  # noqa: SIM115 (the child holds it)
        return subprocess.Popen(argv, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT)

    def finish(self, proc: subprocess.Popen[bytes], log: str, timeout: float = 3600) -> None:
        if proc.wait(timeout=timeout) != 0:
            tail = (self.logs / f"{log}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{log} exited with {proc.returncode}:\n{tail}")


def fedkube(run: Run) -> Path:
    out = run.work / "out"
    proc = run.popen(
        [sys.executable, "-m", "fedkube", "run", str(run.job_dir / "job.yaml"), "--output",
         str(out), "--quiet", "--fresh", "--allow-import", "peer_models:*"], "fedkube",
    )  # fmt: skip
    run.finish(proc, "fedkube")
    return out / "model.safetensors"


def flower_deployment(run: Run) -> Path:
    bin_ = venv("flwr-1.42")
    home, port = run.work / "flwr-home", free_port()
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n"
    )
    env = {"FLWR_HOME": str(home), "PATH": f"{bin_}:{run.env['PATH']}"}
    run.popen(
        [str(bin_ / "flower-superlink"), "--insecure", "--port", str(port)], "superlink", **env
    )
    wait_for(lambda: _listening(port), 120, "Flower's SuperLink")
    for i in range(json.loads((run.job_dir / "job.json").read_text())["sites"]):
        run.popen(
            [str(bin_ / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
             "--node-config", f"partition-id={i}", "--port", str(free_port())],
            f"supernode-{i}", **env,
        )  # fmt: skip
    app = run.popen([str(bin_ / "flwr"), "run", str(HERE / "flower-app"), "bench", "--stream"],
                    "flwr-run", **env)  # fmt: skip
    final = run.job_dir / "flower-global.npz"
    wait_for(lambda: final.exists() or app.poll() not in (None, 0), 3600, "Flower's run")
    if not final.exists():
        run.finish(app, "flwr-run")
    return final


def flower_simulation(run: Run) -> Path:
    bin_ = venv("flwr-1.42")
    proc = run.popen([str(bin_ / "python"), str(HERE / "flower_sim.py")], "flower-simulation")
    run.finish(proc, "flower-simulation")
    return run.job_dir / "flower-global.npz"


def _flare(run: Run, mode: str) -> Path:
    bin_ = venv("nvflare-2.9")
    proc = run.popen(
        [str(bin_ / "python"), str(HERE / "flare_job.py"), "--env", mode, "--workspace",
         str(run.work / "workspace")], f"flare-{mode}",
        NVFLARE_POC_WORKSPACE=str(run.work / "poc"), PATH=f"{bin_}:{run.env['PATH']}",
    )  # fmt: skip
    run.finish(proc, f"flare-{mode}")
    return run.job_dir / "flare-global.npz"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


SYSTEMS: dict[str, tuple[str, Callable[[Run], Path]]] = {
    "fedkube": ("fedkube 0.1 (`fedkube run`, processes)", fedkube),
    "flower-deployment": ("Flower 1.42 deployment (SuperLink + SuperNodes)", flower_deployment),
    "flower-simulation": ("Flower 1.42 simulation (Ray)", flower_simulation),
    "flare-poc": ("NVIDIA FLARE 2.9 POC (server + client processes)", lambda r: _flare(r, "poc")),
    "flare-simulator": ("NVIDIA FLARE 2.9 simulator", lambda r: _flare(r, "sim")),
}


def settle() -> None:
    """A pause between runs, for the last run's processes and sockets to go."""
    time.sleep(2)
