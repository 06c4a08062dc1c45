"""A load job: one real aggregator process and synthetic sites spread over processes
(``fedkube.loadtest.sites``), watched for memory, threads and descriptors."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkube.loadtest.sites import Churn, Counters, round_mean
from fedkube.spec.progress import JobResult
from fedkube.testing import LocalJob, manifest


def merge(parts: list[Counters]) -> Counters:
    """One process's counters after another's; model sums must agree across processes too."""
    out = Counters()
    for c in parts:
        for f in ("sites", "finished", "succeeded", "connects", "updates", "evaluations"):
            setattr(out, f, getattr(out, f) + getattr(c, f))
        out.drops_before_answer += c.drops_before_answer
        out.drops_mid_upload += c.drops_mid_upload
        out.bytes_down += c.bytes_down
        out.bytes_up += c.bytes_up
        out.model_sum_disagreements += c.model_sum_disagreements
        out.away += c.away
        out.transfers += c.transfers
        for k, v in c.refusals.items():
            out.refusals[k] = out.refusals.get(k, 0) + v
        for version, total in c.model_sums.items():
            seen = out.model_sums.setdefault(int(version), total)
            if abs(seen - total) > 1e-6 * max(1.0, abs(total)):
                out.model_sum_disagreements += 1
    return out


def load_manifest(
    name: str, sites: int, rounds: int, hidden: list[int], **spec: Any
) -> dict[str, Any]:
    """A job for synthetic sites: digits' shape (64 features, 10 classes), an MLP of
    ``hidden`` widths, a quorum of half the sites, and room for slow rounds."""
    doc = manifest(
        name,
        sites=sites,
        rounds=rounds,
        dataset="digits",
        min_sites=max(1, sites // 2),
        model={"name": "mlp", "hiddenSizes": hidden},
        timeout=900,
        joinGraceSeconds=15,
    )
    doc["spec"].update(spec)
    return doc


def mlp_parameters(hidden: list[int], features: int = 64, classes: int = 10) -> int:
    sizes = [features, *hidden, classes]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


@dataclass
class LoadRun:
    """One load job's outcome, as the aggregator and the synthetic sites saw it."""

    result: JobResult
    counters: Counters
    idle_bytes: int  # the aggregator's resident memory once its model is built
    peak_bytes: int  # its high-water mark while the sites ran
    # its resident memory once every site was connected, before round 1 opened (0: not seen)
    connected_bytes: int
    threads: int  # most threads it had at once
    fds: int  # most open file descriptors
    seconds: float

    def sum_errors(self, parameters: int) -> list[float]:
        """Per round, how far each parameter's move is from the FedAvg mean of the round's
        sites' constants (the sum over the model, divided by its parameters)."""
        errors = []
        sums = self.counters.model_sums
        for h in self.result.history:
            got = (sums[h.round] - sums[h.round - 1]) / parameters
            errors.append(abs(got - round_mean(h.sites)))
        return errors


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def run_load(
    folder: Path,
    doc: dict[str, Any],
    processes: int,
    churn: Churn,
    timeout: float = 1800,
    lean: bool = False,
    reach: Callable[[int], str] | None = None,
    aggregator_args: Sequence[str] = (),
) -> LoadRun:
    """Start a real aggregator process for ``doc`` and its sites as synthetic sites spread
    over ``processes`` processes; wait for the job to end.
    ``lean`` sites time every transfer and check no sums (``SyntheticSite``); ``reach(port)``
    is the endpoint the sites reach the aggregator's port at (a proxy; its own by default);
    ``aggregator_args`` are more flags for it (``--upload-window 64``)."""
    sites = len(doc["spec"]["sites"])
    job = LocalJob(folder, doc)
    # Sites that dropped near the end come back within seconds: the aggregator waits for
    # them to hear that the job finished.
    job.aggregator_args = ["--linger-seconds", "5", *aggregator_args]
    agg = job.start_aggregator()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        while job.progress() is None:
            if agg.poll() is not None:
                raise RuntimeError(f"the aggregator exited:\n{job.log('aggregator')}")
            time.sleep(0.1)
        idle = _status(agg.pid, "VmRSS")
        Path(f"/proc/{agg.pid}/clear_refs").write_text("5")  # reset the high-water mark
        started = time.monotonic()
        share = -(-sites // processes)
        for first in range(0, sites, share):
            endpoint = reach(job.port) if reach is not None else f"127.0.0.1:{job.port}"
            args = ["--endpoint", endpoint, "--job", doc["metadata"]["name"]]
            args += ["--first", str(first), "--count", str(min(share, sites - first))]
            args += ["--drop", str(churn.drop), "--late", str(churn.late), "--seed", str(first)]
            args += ["--lean"] if lean else []
            log = (job.logs / f"sites-{first}.log").open("wb")
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "fedkube.loadtest", *args],
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
            )
        peak, threads, fds = idle, 0, 0
        connected, before_round_one = 0, True
        while agg.poll() is None and time.monotonic() - started < timeout:
            try:
                if before_round_one:
                    # The last reading taken before round 1 opened: the sites' connections,
                    # no transfer yet (read first: the round may open during the query).
                    rss, progress = _status(agg.pid, "VmRSS"), job.progress()
                    if progress is not None and progress.open_round:
                        before_round_one = False
                    elif progress is not None:
                        connected = rss
                peak = max(peak, _status(agg.pid, "VmHWM"))
                threads = max(threads, _status(agg.pid, "Threads"))
                fds = max(fds, len(os.listdir(f"/proc/{agg.pid}/fd")))
            except (OSError, KeyError):
                break
            time.sleep(0.05)
        result = job.wait_done(timeout=60)
        seconds = time.monotonic() - started
        # A site away when the job ended (dropped, coming back) never hears it: stop it.
        until = time.monotonic() + 10
        while time.monotonic() < until and any(w.poll() is None for w in workers):
            time.sleep(0.1)
        for w in workers:
            if w.poll() is None:
                w.terminate()
        outs = [w.communicate(timeout=60)[0] for w in workers]
        bad = [w.returncode for w in workers if w.returncode != 0]
        if bad:
            raise RuntimeError(f"synthetic site processes failed ({bad}); see {job.logs}")
        counters = merge([Counters(**json.loads(o)) for o in outs])
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        job.stop()
    return LoadRun(
        result, counters, idle * 1024, peak * 1024, connected * 1024, threads, fds, seconds
    )
