"""A chaos soak on the test control plane: a seeded schedule of real faults against a running
job (SIGKILL of its aggregator's and trainers' processes and of the operator, restarts of
kube-apiserver and etcd, a trainer stopped with SIGSTOP past the round timeout, its connections
cut), while a second job with record-level DP shows its sites' privacy ledgers never go down.
What `bench/chaos.py` runs at length and `tests/kube/test_chaos.py` briefly."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkube.privacy.accountant import RdpAccountant

from tests.kube_harness.controlplane import ControlPlane
from tests.kube_harness.jobs import apply, example, with_free_ports
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess

KINDS = (
    "aggregator SIGKILL",
    "trainer SIGKILL",
    "operator SIGKILL",
    "kube-apiserver restart",
    "etcd restart",
    "trainer SIGSTOP past the round timeout",
    "trainer connections cut",
)
ROUND_TIMEOUT = 8


def chaos_job(name: str, rounds: int, local_epochs: int = 40) -> dict[str, Any]:
    """Five sites, every one needed each round: no round can close without a faulted site, so
    the model must come out bit for bit as an undisturbed run's. 40 local epochs make rounds
    of about 0.15 s on two cores."""
    doc = with_free_ports(example(name, rounds=rounds, minSitesPerRound=5))
    doc["spec"]["roundTimeoutSeconds"] = ROUND_TIMEOUT
    doc["spec"]["task"]["localEpochs"] = local_epochs
    # Every aggregator SIGKILL is a recreation: the soak makes up to a dozen (the default of 3
    # failed a 56-fault soak, as it should).
    doc["spec"]["backoffLimit"] = 100
    doc["spec"]["checkpoint"] = {"claimName": f"{name}-state"}
    return doc


def private_job(name: str, rounds: int) -> dict[str, Any]:
    """Record-level DP (DP-SGD is slower a step): its ledgers are what is watched."""
    doc = chaos_job(name, rounds)
    doc["spec"]["task"]["localEpochs"] = 5
    doc["spec"]["roundTimeoutSeconds"] = 120
    # A cap the soak's length cannot reach (about 1.5 epsilon a round here): the ledgers are
    # what is watched, not the cap.
    cap = max(1000.0, 5.0 * rounds)
    doc["spec"]["privacy"] = {
        "recordLevel": {"noiseMultiplier": 1.0, "maxGradNorm": 1.0, "epsilonCap": cap}
    }
    return doc


@dataclass
class Fault:
    kind: str
    at: float
    round: int
    detail: str = ""
    recovered_after: float | None = None  # seconds until the next round closed


@dataclass
class Soak:
    cp: ControlPlane
    agent: NodeAgent
    operator: OperatorProcess
    namespace: str
    job: str
    private: str
    seed: int
    local_epochs: int = 40
    faults: list[Fault] = field(default_factory=list)
    rounds_seen: list[tuple[float, int]] = field(default_factory=list)
    ledger_drops: list[str] = field(default_factory=list)
    ledger_reads: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    # -- what is watched -------------------------------------------------------------
    def status(self, job: str) -> dict[str, Any]:
        out = self.cp.kubectl("get", "fj", job, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}

    def round(self) -> int:
        return max((r for _, r in self.rounds_seen), default=0)

    def _watch(self) -> None:
        last: dict[Path, float] = {}
        while not self.stop.is_set():
            status = self.status(self.job)
            if "round" in status:
                self.rounds_seen.append((time.monotonic(), int(status["round"])))
            for path in self.agent.root.glob("claims/**/privacy-ledger.json"):
                if self.private not in str(path):
                    continue
                try:
                    state = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # written atomically: a read between the two is a miss, not a drop
                eps = RdpAccountant.from_state(state).epsilon(1e-5) if state.get("history") else 0
                self.ledger_reads += 1
                if eps < last.get(path, 0.0) - 1e-9:
                    self.ledger_drops.append(f"{path}: {last[path]} -> {eps}")
                last[path] = max(eps, last.get(path, 0.0))
            time.sleep(0.5)

    # -- the faults ------------------------------------------------------------------
    def _runs(self, suffix: str) -> list[Any]:
        return [
            r
            for r in self.agent.runs.values()
            if r.name.startswith(f"{self.job}-{suffix}")
            and r.containers
            and r.containers[0].proc is not None
            and r.containers[0].proc.poll() is None
        ]

    def _signal(self, suffix: str, sig: int) -> str:
        runs = self._runs(suffix)
        if not runs:
            return "nothing running"
        run = random.Random(self.seed + len(self.faults)).choice(runs)
        os.killpg(run.containers[0].proc.pid, sig)
        return run.name

    def inject(self, kind: str) -> Fault:
        fault = Fault(kind, time.monotonic(), self.round())
        if kind == "aggregator SIGKILL":
            fault.detail = self._signal("aggregator", signal.SIGKILL)
        elif kind == "trainer SIGKILL":
            fault.detail = self._signal("trainer", signal.SIGKILL)
        elif kind == "operator SIGKILL":
            self.operator.kill()
            self.operator.start()
        elif kind == "kube-apiserver restart":
            fault.detail = f"answering again after {self.cp.restart('kube-apiserver'):.1f} s"
        elif kind == "etcd restart":
            fault.detail = f"answering again after {self.cp.restart('etcd'):.1f} s"
        elif kind == "trainer SIGSTOP past the round timeout":
            name = self._signal("trainer", signal.SIGSTOP)
            time.sleep(ROUND_TIMEOUT + 2)
            run = next((r for r in self.agent.runs.values() if r.name == name), None)
            if run is not None and run.containers[0].proc is not None:
                os.killpg(run.containers[0].proc.pid, signal.SIGCONT)
            fault.detail = f"{name} for {ROUND_TIMEOUT + 2} s"
        elif kind == "trainer connections cut":
            port = self.port
            cut = subprocess.run(
                ["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"],
                capture_output=True,
                text=True,
            )
            fault.detail = f"ss -K to :{port}: rc {cut.returncode}"
        self.faults.append(fault)
        return fault

    port: int = 0

    # -- the run ---------------------------------------------------------------------
    def run(
        self, rounds: int, faults: int, every: tuple[float, float], timeout: float
    ) -> dict[str, Any]:
        doc = chaos_job(self.job, rounds, self.local_epochs)
        self.port = doc["spec"]["aggregator"]["port"]
        apply(self.cp, self.namespace, doc)
        apply(self.cp, self.namespace, private_job(self.private, rounds))
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        rng = random.Random(self.seed)
        schedule = [KINDS[i % len(KINDS)] for i in range(faults)]
        rng.shuffle(schedule)
        end = time.monotonic() + timeout
        try:
            self._until(lambda: self.round() >= 2, end)
            for kind in schedule:
                if self._finished(self.job):
                    break
                time.sleep(rng.uniform(*every))
                fault = self.inject(kind)
                # One fault at a time: the next waits until a round closed after this one (a
                # pile of faults inside one round's attempts fails the job by design, and
                # the time each kind costs could not be told apart).
                self._until(lambda f=fault: self.round() > f.round or self._finished(self.job), end)
            self._until(lambda: self._finished(self.job) and self._finished(self.private), end)
        finally:
            self.stop.set()
            watcher.join()
        self._recoveries()
        return {"job": self.status(self.job), "private": self.status(self.private)}

    def _finished(self, job: str) -> bool:
        return self.status(job).get("phase") in ("Succeeded", "Failed")

    @staticmethod
    def _until(done: Callable[[], bool], end: float) -> None:
        while not done():
            if time.monotonic() > end:
                raise TimeoutError("the soak did not finish in time")
            time.sleep(1)

    def _recoveries(self) -> None:
        for f in self.faults:
            after = [t for t, r in self.rounds_seen if t > f.at and r > f.round]
            f.recovered_after = (min(after) - f.at) if after else None

    def round_seconds(self) -> float:
        """The median time between round closes, faults or not."""
        times = [t for (_, r0), (t, r) in itertools.pairwise(self.rounds_seen) if r > r0]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return statistics.median(gaps) if gaps else 0.0


def table(soak: Soak, survived: bool) -> list[str]:
    """Faults injected and survived per kind, and the time each kind cost."""
    base = soak.round_seconds()
    lines = [
        f"{'fault':40s} {'injected':>8s} {'survived':>8s} {'lost (median s)':>16s}",
    ]
    for kind in KINDS:
        mine = [f for f in soak.faults if f.kind == kind]
        lost = [max(0.0, f.recovered_after - base) for f in mine if f.recovered_after is not None]
        median = f"{statistics.median(lost):.1f}" if lost else "-"
        ok = len(mine) if survived else 0
        lines.append(f"{kind:40s} {len(mine):8d} {ok:8d} {median:>16s}")
    return lines


def outputs(agent: NodeAgent, namespace: str, job: str) -> tuple[dict[str, Any], bytes]:
    """(result.json, the model's bytes) from the job's own claim on the node's disk."""
    folder = agent.claim_dir(namespace, f"{job}-state")
    result = next(folder.glob("**/result.json"))
    model = next(folder.glob("**/model.safetensors"))
    return json.loads(result.read_text()), model.read_bytes()


def undisturbed(
    cp: ControlPlane,
    agent: NodeAgent,
    namespace: str,
    job: str,
    rounds: int,
    timeout: float,
    local_epochs: int = 40,
) -> bytes:
    """The same manifest run without a fault: the model a soak must reproduce."""
    apply(cp, namespace, chaos_job(job, rounds, local_epochs))
    end = time.monotonic() + timeout
    while True:
        out = cp.kubectl("get", "fj", job, "-n", namespace, "-o", "json", check=False)
        phase = (
            json.loads(out.stdout).get("status", {}).get("phase") if out.returncode == 0 else None
        )
        if phase in ("Succeeded", "Failed"):
            assert phase == "Succeeded", out.stdout[-2000:]
            return outputs(agent, namespace, job)[1]
        if time.monotonic() > end:
            raise TimeoutError(f"the undisturbed run of {job} did not finish")
        time.sleep(1)
