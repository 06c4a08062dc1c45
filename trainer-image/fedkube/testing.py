"""Helpers to test and benchmark federated jobs on one machine (as ``kopf.testing`` is to kopf).

``manifest()`` writes a small FederatedJob document in code; ``LocalJob`` runs one as real
processes (an aggregator and one trainer per site on loopback) that a test can start, kill and
restart one by one, and reads its progress and result through the typed contract.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fedkube.aggregator.outputs import RESULT_FILE
from fedkube.cli.launch import free_port, spawn_fedkube
from fedkube.spec.progress import JobResult, Progress
from fedkube.transport.progress_client import fetch_progress


def manifest(
    name: str = "t",
    *,
    sites: int = 3,
    rounds: int = 3,
    dataset: str = "breast_cancer",
    model: dict[str, Any] | None = None,
    min_sites: int = 1,
    local_epochs: int = 1,
    timeout: float = 30,
    **spec: Any,
) -> dict[str, Any]:
    """A job over ``sites`` IID shares of a scikit-learn dataset; ``spec`` adds or replaces
    top-level spec fields (camelCase, as in YAML)."""
    return {
        "apiVersion": "fedkube.io/v1alpha1",
        "kind": "FederatedJob",
        "metadata": {"name": name},
        "spec": {
            "rounds": rounds,
            "minSitesPerRound": min_sites,
            "roundTimeoutSeconds": timeout,
            "joinGraceSeconds": 20,
            "task": {
                "model": model or {"name": "logistic_regression"},
                "localEpochs": local_epochs,
                "batchSize": 16,
                "learningRate": 0.05,
                "seed": 3,
            },
            "sites": [
                {
                    "name": f"site-{i}",
                    "data": {
                        "sklearn": {
                            "dataset": dataset,
                            "numPartitions": sites,
                            "partition": i,
                            "partitioner": "iid",
                            "seed": 1,
                        },
                        "standardize": "dataset",
                    },
                }
                for i in range(sites)
            ],
            **spec,
        },
    }


def write_manifest(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class LocalJob:
    """An aggregator and trainers as separate processes, started and stopped by the caller."""

    def __init__(self, folder: Path, doc: dict[str, Any]) -> None:
        self.tmp = folder
        self.doc = doc
        self.path = write_manifest(folder / "job.yaml", doc)
        self.port = free_port()
        self.http_port = free_port()
        self.out = folder / "out"
        self.logs = folder / "logs"
        self.logs.mkdir(exist_ok=True)
        self.aggregator: subprocess.Popen[bytes] | None = None
        self.trainers: dict[str, subprocess.Popen[bytes]] = {}
        self.aggregator_args: list[str] = []
        self.trainer_args: dict[str, list[str]] = {}

    def start_aggregator(self) -> subprocess.Popen[bytes]:
        args = ["aggregator", "--manifest", str(self.path), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--http-port", str(self.http_port)]
        args += ["--checkpoint-dir", str(self.tmp / "ck"), "--output-dir", str(self.out)]
        self.aggregator = self._spawn("aggregator", [*args, *self.aggregator_args])
        return self.aggregator

    def start_trainer(self, site: str) -> subprocess.Popen[bytes]:
        args = ["trainer", "--manifest", str(self.path), "--site", site]
        args += ["--aggregator", f"127.0.0.1:{self.port}", *self.trainer_args.get(site, [])]
        self.trainers[site] = self._spawn(site, args)
        return self.trainers[site]

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        # Not in a session of its own: a test's Ctrl-C stops the job's processes too.
        return spawn_fedkube(args, self.logs / f"{name}.log", new_session=False, append=True)

    def start_all(self) -> None:
        self.start_aggregator()
        for s in self.doc["spec"]["sites"]:
            self.start_trainer(s["name"])

    def progress(self) -> Progress | None:
        return fetch_progress(f"http://127.0.0.1:{self.http_port}/progress")

    def wait_for(self, what: Callable[[Progress], bool], timeout: float = 120) -> Progress:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            p = self.progress()
            if p is not None and what(p):
                return p
            if self.aggregator is not None and self.aggregator.poll() not in (None, 0):
                raise AssertionError(f"aggregator died:\n{self.log('aggregator')}")
            time.sleep(0.05)
        raise AssertionError(
            f"timed out; last progress {self.progress()}\n{self.log('aggregator')}"
        )

    def wait_done(self, timeout: float = 180) -> JobResult:
        assert self.aggregator is not None
        code = self.aggregator.wait(timeout)
        assert code == 0, f"aggregator exit {code}:\n{self.log('aggregator')}"
        return JobResult.model_validate_json((self.out / RESULT_FILE).read_bytes())

    def run(self, timeout: float = 180) -> JobResult:
        """Start every process, wait for the job's result, and stop whatever is left."""
        try:
            self.start_all()
            return self.wait_done(timeout)
        finally:
            self.stop()

    def log(self, name: str) -> str:
        p = self.logs / f"{name}.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def stop(self) -> None:
        procs = [self.aggregator, *self.trainers.values()]
        for p in procs:
            if p is not None and p.poll() is None:
                p.kill()
        for p in procs:
            if p is not None:
                p.wait()
