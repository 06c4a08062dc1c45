"""`fedkube run`: the same manifest as local processes, an aggregator and one per site.

Children log to files in the output folder; the console shows one line per round (read from
the aggregator's /progress, as the operator reads it) and a final per-site table. Ctrl-C stops
every child. Relative checkpoint paths are kept inside the output folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fedkube.aggregator.checkpoint import FILE_NAME as CHECKPOINT_FILE
from fedkube.aggregator.outputs import RESULT_FILE
from fedkube.cli.main import EXIT_BAD_INPUT, EXIT_FAILED
from fedkube.errors import SpecError
from fedkube.spec.job import FederatedJob
from fedkube.spec.load import load_job

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class LocalRunOptions:
    manifest: Path
    output: Path | None = None
    fresh: bool = False
    quiet: bool = False
    out: TextIO = sys.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Children get SIGTERM if `fedkube run` itself dies, so no trainer outlives its run.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalRun:
    def __init__(self, job: FederatedJob, opts: LocalRunOptions) -> None:
        self.job = job
        self.opts = opts
        self.out = opts.out
        self.output = (opts.output or Path(job.spec.output.path)).resolve()
        ck = Path(job.spec.checkpoint.path)
        self.checkpoints = ck if ck.is_absolute() else self.output / ck
        self.port = free_port()
        self.http_port = free_port()
        self.children: list[Child] = []
        self.printed_rounds = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _spawn(self, name: str, args: list[str]) -> Child:
        log_path = self.output / "logs" / f"{name}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedkube", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us alone; we stop children in order
                preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def start(self) -> Child:
        (self.output / "logs").mkdir(parents=True, exist_ok=True)
        checkpoint = self.checkpoints / CHECKPOINT_FILE
        if checkpoint.exists():
            if self.opts.fresh:
                checkpoint.unlink()
            else:
                self.say(
                    f"resuming from the checkpoint in {self.checkpoints} (--fresh starts over)"
                )
        (self.output / RESULT_FILE).unlink(missing_ok=True)
        manifest = str(self.opts.manifest.resolve())
        aggregator = self._spawn(
            "aggregator",
            [
                "aggregator",
                "--manifest",
                manifest,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--http-port",
                str(self.http_port),
                "--checkpoint-dir",
                str(self.checkpoints),
                "--output-dir",
                str(self.output),
            ],
        )
        for site in self.job.spec.sites:
            self._spawn(
                site.name,
                [
                    "trainer",
                    "--manifest",
                    manifest,
                    "--site",
                    site.name,
                    "--aggregator",
                    f"127.0.0.1:{self.port}",
                ],
            )
        return aggregator

    def progress(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.http_port}/progress"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except (OSError, ValueError):
            return None

    def print_rounds(self, progress: dict[str, Any], final: bool = False) -> None:
        if self.opts.quiet:
            return
        history = progress.get("history", [])
        total = progress.get("totalRounds", len(history))
        n_sites = len(self.job.spec.sites)
        while self.printed_rounds < len(history):
            h = history[self.printed_rounds]
            # Wait for the evaluation of this round's model unless later rounds have closed.
            if h.get("accuracy") is None and not final and self.printed_rounds == len(history) - 1:
                return
            acc = h.get("accuracy")
            self.say(
                f"round {h['round']:>4}/{total}  sites {len(h['sites'])}/{n_sites}  "
                f"train_loss {_fmt(h.get('trainLoss'))}  loss {_fmt(h.get('loss'))}  "
                f"accuracy {'   -  ' if acc is None else f'{100 * acc:6.2f}%'}  "
                f"{h['durationSeconds']:.2f}s"
            )
            self.printed_rounds += 1

    def watch(self, aggregator: Child) -> int:
        failed_sites: set[str] = set()
        while True:
            code = aggregator.proc.poll()
            progress = self.progress()
            if progress:
                self.print_rounds(progress)
            if code is not None:
                return code
            for c in self.children[1:]:
                rc = c.proc.poll()
                if rc not in (None, 0) and c.name not in failed_sites:
                    failed_sites.add(c.name)
                    self.say(f"site {c.name} stopped with exit code {rc}:\n{_indent(c.tail())}")
            alive = sum(c.proc.poll() is None for c in self.children[1:])
            finished = progress is not None and progress.get("phase") in ("Succeeded", "Failed")
            if not finished and alive < self.job.spec.min_sites_per_round and failed_sites:
                self.say(
                    f"only {alive} site process(es) left, fewer than minSitesPerRound="
                    f"{self.job.spec.min_sites_per_round}; stopping"
                )
                return EXIT_FAILED
            time.sleep(POLL_SECONDS)

    def stop(self, timeout: float = 10.0) -> None:
        for c in self.children:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in self.children:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

    def wait_trainers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for c in self.children[1:]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(max(0.1, deadline - time.monotonic()))

    def report(self) -> dict[str, Any] | None:
        path = self.output / RESULT_FILE
        if not path.exists():
            return None
        result: dict[str, Any] = json.loads(path.read_text())
        self.print_rounds(result, final=True)
        sites = result["sites"]
        g = result.get("global", {})
        extra = [
            (key, title)
            for key, title in (("auc", "auc"), ("personal_accuracy", "personal"))
            if any(key in site for site in sites)
        ]
        self.say("")
        self.say(
            f"{'site':<20} {'samples':>8} {'held-out':>8} {'loss':>8} {'accuracy':>9}"
            + "".join(f" {title:>9}" for _, title in extra)
        )
        rows = [(s["name"], s["samples"], s["evalSamples"], s) for s in sites]
        rows.append(
            ("global", sum(s["samples"] for s in sites), sum(s["evalSamples"] for s in sites), g)
        )
        for name, samples, held_out, scores in rows:
            self.say(
                f"{name:<20} {samples:>8} {held_out:>8} {_fmt(scores.get('loss')):>8} "
                f"{_pct(scores.get('accuracy')):>9}"
                + "".join(
                    f" {_fmt(scores.get(key)) if key == 'auc' else _pct(scores.get(key)):>9}"
                    for key, _ in extra
                )
            )
        if g.get("accuracySpread") is not None:
            self.say(
                f"spread of site accuracy (best - worst): {100 * g['accuracySpread']:.2f} points"
            )
        self.say("")
        self.say(
            f"{result['roundsCompleted']} rounds in {result['wallSeconds']:.1f}s; model saved "
            f"to {result['modelPath']}; result in {path}"
        )
        return result


def _fmt(v: float | None) -> str:
    return "   -  " if v is None else f"{v:.4f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def run_local(opts: LocalRunOptions) -> int:
    job = load_job(opts.manifest)
    if job.spec.aggregator.endpoint:
        raise SpecError(
            str(opts.manifest),
            [
                "spec.aggregator.endpoint: `fedkube run` runs its own aggregator; remove the "
                "endpoint to run locally"
            ],
        )
    run = LocalRun(job, opts)
    run.say(
        f"job {job.name}: {len(job.spec.sites)} sites, {job.spec.rounds} rounds, strategy "
        f"{job.spec.strategy.name}; logs in {run.output / 'logs'}"
    )
    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        aggregator = run.start()
        code = run.watch(aggregator)
        if code == 0:
            run.wait_trainers(timeout=10)
    except KeyboardInterrupt:
        interrupted = True
        code = 130
        run.say("interrupted; stopping every process")
    finally:
        run.stop()
        signal.signal(signal.SIGTERM, previous)
    if interrupted:
        return 130
    if code != 0:
        run.say(
            f"the aggregator stopped with exit code {code}:\n{_indent(run.children[0].tail(15))}"
        )
        return EXIT_BAD_INPUT if code == EXIT_BAD_INPUT else EXIT_FAILED
    return 0 if run.report() is not None else EXIT_FAILED
