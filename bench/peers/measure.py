"""What the peer benchmark measures, the same way for every system: the peak proportional
set size (PSS) summed over every process a run started (found by a tag in their environment,
so that daemons FLARE detaches are counted too), bytes over loopback, the time to the first
round and each round's cost beyond its slowest site's training, and the final model's
accuracy on the union of the sites' held-out rows."""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

TAG = "PEERS_RUN_TAG"


def tagged(tag: str) -> list[psutil.Process]:
    """Every process whose environment carries ``TAG=tag``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(TAG) == tag:
                found.append(proc)
    return found


class PeakPss(threading.Thread):
    """Samples the summed PSS of a run's processes twice a second until stopped."""

    def __init__(self, tag: str) -> None:
        super().__init__(daemon=True)
        self.tag, self.peak, self.samples = tag, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            total = 0
            for proc in tagged(self.tag):
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_full_info().pss
            self.peak, self.samples = max(self.peak, total), self.samples + 1
            self._stop_event.wait(0.5)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def loopback_bytes() -> int:
    """Bytes received on the loopback interface so far (each byte sent over it is received once)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[0])
    return 0


def kill_tagged(tag: str) -> None:
    procs = tagged(tag)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


@dataclass
class Rounds:
    """When each round's training ran at each site."""

    first_start: float  # wall clock: the first site's start of round 1
    overheads: list[float] = field(default_factory=list)  # rounds 2..R: cost beyond training


def rounds_from_events(path: Path, sites: int, rounds: int) -> Rounds:
    """From site_task's lines: round r's cost is the time from round r-1's last site finishing
    to round r's last site finishing, less round r's slowest site's training."""
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(events) != sites * rounds:
        raise RuntimeError(f"{path}: {len(events)} site-rounds, expected {sites} x {rounds}")
    by_round: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        by_round.setdefault(e["round"], []).append(e)
    ends = {r: max(e["end"] for e in es) for r, es in by_round.items()}
    slowest = {r: max(e["end"] - e["start"] for e in es) for r, es in by_round.items()}
    out = Rounds(min(e["start"] for e in by_round[1]))
    for r in range(2, rounds + 1):
        out.overheads.append(ends[r] - ends[r - 1] - slowest[r])
    return out


def rounds_from_fedkube(result: dict[str, Any]) -> Rounds:
    """From fedkube's result.json: each round's close to the next, less its slowest site."""
    hist = result["history"]
    out = Rounds(hist[0]["openedAt"])
    for before, h in itertools.pairwise(hist):
        out.overheads.append(h["closedAt"] - before["closedAt"] - h["maxTrainSeconds"])
    return out


def accuracy(job_dir: Path, arrays: dict[str, np.ndarray]) -> float:
    """The final model (arrays by state-dict name) scored on the union of held-out rows."""
    import site_task
    import torch

    job = json.loads((job_dir / "job.json").read_text())
    model = site_task.build_model(job)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    model.eval()
    with np.load(job_dir / "test.npz") as test, torch.no_grad():
        x, y = torch.from_numpy(test["x"]), torch.from_numpy(test["y"])
        predicted = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(y), 256)])
    return float((predicted == y).float().mean())


@dataclass
class Measurement:
    system: str
    job: str
    to_first_round: float
    round_overhead: float  # the median over rounds 2..R
    whole_run: float  # launch to the final global model written
    peak_pss_bytes: int
    bytes_per_round: float
    accuracy: float
    rounds: int

    @staticmethod
    def of(system: str, job: str, launched: float, done: float, rounds: Rounds, pss: int,
           lo_bytes: int, acc: float, n_rounds: int) -> Measurement:  # fmt: skip
        overhead = statistics.median(rounds.overheads) if rounds.overheads else float("nan")
        return Measurement(
            system, job, rounds.first_start - launched, overhead, done - launched, pss,
            lo_bytes / n_rounds, acc, n_rounds,
        )  # fmt: skip


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
