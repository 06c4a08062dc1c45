"""Small job manifests and real-process helpers for the engine's tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fedkube(args: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "fedkube", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            **kw,
        )


class LocalJob:
    """An aggregator and trainers as separate processes, started and stopped by the test."""

    def __init__(self, tmp: Path, doc: dict[str, Any]) -> None:
        self.tmp = tmp
        self.doc = doc
        self.path = write_manifest(tmp / "job.yaml", doc)
        self.port = free_port()
        self.http_port = free_port()
        self.out = tmp / "out"
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.aggregator: subprocess.Popen[bytes] | None = None
        self.trainers: dict[str, subprocess.Popen[bytes]] = {}
        self.aggregator_args: list[str] = []
        self.trainer_args: dict[str, list[str]] = {}

    def start_aggregator(self) -> subprocess.Popen[bytes]:
        self.aggregator = fedkube(
            [
                "aggregator",
                "--manifest",
                str(self.path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--http-port",
                str(self.http_port),
                "--checkpoint-dir",
                str(self.tmp / "ck"),
                "--output-dir",
                str(self.out),
                *self.aggregator_args,
            ],
            self.logs / "aggregator.log",
        )
        return self.aggregator

    def start_trainer(self, site: str) -> subprocess.Popen[bytes]:
        self.trainers[site] = fedkube(
            [
                "trainer",
                "--manifest",
                str(self.path),
                "--site",
                site,
                "--aggregator",
                f"127.0.0.1:{self.port}",
                *self.trainer_args.get(site, []),
            ],
            self.logs / f"{site}.log",
        )
        return self.trainers[site]

    def start_all(self) -> None:
        self.start_aggregator()
        for s in self.doc["spec"]["sites"]:
            self.start_trainer(s["name"])

    def progress(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/progress", timeout=2
            ) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except (OSError, ValueError):
            return None

    def wait_for(
        self, what: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
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

    def wait_done(self, timeout: float = 180) -> dict[str, Any]:
        assert self.aggregator is not None
        code = self.aggregator.wait(timeout)
        assert code == 0, f"aggregator exit {code}:\n{self.log('aggregator')}"
        result: dict[str, Any] = json.loads((self.out / "result.json").read_text())
        return result

    def run(self, timeout: float = 180) -> dict[str, Any]:
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
