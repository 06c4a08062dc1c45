"""`fedkube run`: the same manifest as local processes, an aggregator and one per site.

Children log to files in the output folder; the console shows one line per round (read from
the aggregator's /progress, as the operator reads it) and a final per-site table. Ctrl-C stops
every child. Relative checkpoint paths are kept inside the output folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fedkube import exit_codes
from fedkube.aggregator.checkpoint import FILE_NAME as CHECKPOINT_FILE
from fedkube.aggregator.outputs import RESULT_FILE
from fedkube.cli.launch import spawn_fedkube
from fedkube.cli.local_ports import chosen_port
from fedkube.cli.progress_plot import plot_progress
from fedkube.cli.report import indent, result_table, round_line
from fedkube.cli.statistics_report import plot_statistics, statistics_lines
from fedkube.cli.tensorboard_log import RunBoard
from fedkube.cli.zygote import ForkedChild, fork_fedkube, preload
from fedkube.errors import SpecError
from fedkube.models.plugins import PluginPolicy
from fedkube.spec.job import FederatedJob
from fedkube.spec.load import load_job
from fedkube.spec.progress import JobResult, Progress, RoundRecord, SiteSummary
from fedkube.spec.site_policy import data_reading_sites, load_site_policy, policy_refusals
from fedkube.spec.statistics import StatisticsReport
from fedkube.transport.progress_client import fetch_progress

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class LocalRunOptions:
    manifest: Path
    output: Path | None = None
    fresh: bool = False
    quiet: bool = False
    out: TextIO = sys.stdout
    # `fedkube stats`: round 0 alone, the federated statistics; no training.
    statistics_only: bool = False
    # A site's policy (the YAML of its Helm site.policy): the job is refused here as that
    # site's operator would refuse it.
    site_policy: Path | None = None
    # Import paths the user allows besides the manifest's own (`fedkube run --allow-import`).
    allow_import: tuple[str, ...] = ()
    # The command line's main, run in forks of this process for the children (None: each
    # child is a fresh `fedkube` process).
    entry: Callable[[list[str]], int] | None = None
    # --json: the result (or the statistics) as one JSON document on stdout for scripts; the
    # lines for people go to `out` (stderr then).
    json_output: bool = False
    # Each round's scalars for TensorBoard, written here as its line is printed.
    tensorboard: Path | None = None


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes] | ForkedChild
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
        # Statistics go beside a job's outputs, never over its result.json.
        default = Path(job.spec.output.path) / ("statistics" if opts.statistics_only else "")
        self.output = (opts.output or default).resolve()
        ck = Path(job.spec.checkpoint.path)
        self.checkpoints = ck if ck.is_absolute() else self.output / ck
        manifest = str(opts.manifest)
        self.port = chosen_port(job.spec.aggregator, "port", "port", manifest)
        self.http_port = chosen_port(job.spec.aggregator, "http_port", "httpPort", manifest)
        self.children: list[Child] = []
        self.printed_rounds = 0
        self.attempt = ""  # the line that heads this attempt in each log
        self.last_progress: Progress | None = None
        self.board = RunBoard(opts.tensorboard) if opts.tensorboard else None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _spawn(self, name: str, args: list[str]) -> Child:
        log_path = self.output / "logs" / f"{name}.log"
        # Each attempt appends under a line of its own: what happened before a crash and a
        # resume stays there to read.
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"=== {self.attempt} ===\n")
        # Forks of this process share its imports (torch...): see zygote.py. FEDKUBE_EXEC=1
        # starts each child as a fresh interpreter instead.
        exec_children = os.environ.get("FEDKUBE_EXEC") == "1" or not hasattr(os, "fork")
        entry = None if exec_children else self.opts.entry
        if entry is None:
            proc: subprocess.Popen[bytes] | ForkedChild = spawn_fedkube(args, log_path, append=True)
        else:
            proc = fork_fedkube(args, log_path, entry)
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def _plugins(self) -> list[str]:
        """The user runs every site: the manifest's own import paths (their modules in its
        folder) and what --allow-import names are allowed."""
        folder = self.opts.manifest.resolve().parent
        task = self.job.spec.task
        policy = PluginPolicy.for_local(task, folder, self.opts.allow_import)
        # Refused here, in the words of a local run, before any process starts.
        for field, path in (
            ("spec.task.model.importPath", task.model.import_path),
            ("spec.task.trainFunction", task.train_function),
        ):
            if path:
                policy.check(path, field)
        return [arg for path in policy.allowed for arg in ("--allow-import", path)]

    def start(self) -> Child:
        (self.output / "logs").mkdir(parents=True, exist_ok=True)
        checkpoint = self.checkpoints / CHECKPOINT_FILE
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.attempt = f"fedkube run started {started}, from the first round"
        if checkpoint.exists() and not self.opts.statistics_only:
            if self.opts.fresh:
                checkpoint.unlink()
                self.attempt = f"fedkube run started {started}, fresh (--fresh)"
            else:
                self.say(
                    f"resuming from the checkpoint in {self.checkpoints} (--fresh starts over)"
                )
                self.attempt = f"fedkube run started {started}, resuming from the checkpoint"
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
                # Only this process reads the last /progress, polling 10 times a second.
                "--linger-seconds",
                "0.3",
                *(["--statistics-only"] if self.opts.statistics_only else []),
                *self._plugins(),
            ],
        )
        # While the aggregator starts, the sites' imports load here once, for every site.
        sites = self.job.spec.sites
        preload(sorted({s.data.sklearn.dataset for s in sites if s.data and s.data.sklearn}))
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
                    # Each site's personal model stays in a folder of its own.
                    "--personal-dir",
                    str(self.output / "sites" / site.name),
                    *self._plugins(),
                ],
            )
        return aggregator

    def progress(self) -> Progress | None:
        progress = fetch_progress(f"http://127.0.0.1:{self.http_port}/progress")
        self.last_progress = progress or self.last_progress
        return progress

    def failure(self) -> str | None:
        """Why the job failed, as the aggregator said it last."""
        last = self.last_progress
        return last.message if last is not None and last.phase == "Failed" else None

    def print_rounds(
        self,
        history: list[RoundRecord],
        total: int,
        final: bool = False,
        sites: dict[str, SiteSummary] | None = None,
    ) -> None:
        """Each round once it is final: its line, and its TensorBoard scalars (each site's
        scores with the latest round, the one they are of)."""
        n_sites = len(self.job.spec.sites)
        while self.printed_rounds < len(history):
            h = history[self.printed_rounds]
            # Wait for the evaluation of this round's model unless later rounds have closed.
            if h.accuracy is None and not final and self.printed_rounds == len(history) - 1:
                return
            if not self.opts.quiet:
                self.say(round_line(h, total, n_sites))
            if self.board is not None:
                latest = self.printed_rounds == len(history) - 1
                self.board.add_round(h, sites if latest else None)
            self.printed_rounds += 1

    def watch(self, aggregator: Child) -> int:
        failed_sites: set[str] = set()
        while True:
            code = aggregator.proc.poll()
            progress = self.progress()
            if progress:
                self.print_rounds(progress.history, progress.total_rounds, sites=progress.sites)
            if code is not None:
                return code
            for c in self.children[1:]:
                rc = c.proc.poll()
                if rc not in (None, 0) and c.name not in failed_sites:
                    failed_sites.add(c.name)
                    self.say(f"site {c.name} stopped with exit code {rc}:\n{indent(c.tail())}")
            alive = sum(c.proc.poll() is None for c in self.children[1:])
            finished = progress is not None and progress.finished
            if not finished and alive < self.job.spec.min_sites_per_round and failed_sites:
                self.say(
                    f"only {alive} site process(es) left, fewer than minSitesPerRound="
                    f"{self.job.spec.min_sites_per_round}; stopping"
                )
                return exit_codes.FAILED
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

    def report(self) -> JobResult | None:
        path = self.output / RESULT_FILE
        if not path.exists():
            return None
        result = JobResult.model_validate_json(path.read_bytes())
        if self.opts.statistics_only:
            self.report_statistics(result)
            return result
        self.print_rounds(
            result.history, result.total_rounds, final=True, sites={s.name: s for s in result.sites}
        )
        if self.board is not None:
            self.say(f"TensorBoard: tensorboard --logdir {self.opts.tensorboard}")
        for line in result_table(result, path):
            self.say(line)
        self.say(f"progress plot: {plot_progress(result, self.output)}")
        return result

    def report_statistics(self, result: JobResult) -> None:
        if result.statistics_path is None:
            self.say("the job wrote no statistics")
            return
        path = Path(result.statistics_path)
        report = StatisticsReport.model_validate_json(path.read_bytes())
        for line in statistics_lines(report, path):
            self.say(line)
        self.say(f"distributions: {plot_statistics(report, self.output)}")


def check_site_policy(job: FederatedJob, path: Path) -> None:
    """Refuse the job as a site with this policy would: every site that reads a file here
    stands for a site that reads its own data."""
    policy = load_site_policy(path)
    refused = policy_refusals(job, policy, data_reading_sites(job, local_only=False))
    if refused:
        raise SpecError(
            f"{job.name}, refused by the site policy {path}",
            [r.text("policy setting ") for r in refused],
        )


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
    if opts.site_policy is not None:
        check_site_policy(job, opts.site_policy)
    run = LocalRun(job, opts)
    doing = (
        "federated statistics only"
        if opts.statistics_only
        else f"{job.spec.rounds} rounds, strategy {job.spec.strategy.name}"
    )
    run.say(f"job {job.name}: {len(job.spec.sites)} sites, {doing}; logs in {run.output / 'logs'}")
    run.say(f"metrics for Prometheus at http://127.0.0.1:{run.http_port}/metrics")
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
        code = exit_codes.INTERRUPTED
        run.say("interrupted; stopping every process")
    finally:
        run.stop()
        if run.board is not None:
            run.board.close()
        signal.signal(signal.SIGTERM, previous)
    if interrupted:
        return _done(opts, job.name, exit_codes.INTERRUPTED, "interrupted")
    if code != 0:
        why = run.failure()
        if why:
            run.say(f"job {job.name} failed: {why}")
        run.say(
            f"the aggregator stopped with exit code {code}:\n{indent(run.children[0].tail(15))}"
        )
        exit_code = exit_codes.BAD_INPUT if code == exit_codes.BAD_INPUT else exit_codes.FAILED
        return _done(opts, job.name, exit_code, why or f"the aggregator exited with {code}")
    result = run.report()
    if result is None:
        return _done(opts, job.name, exit_codes.FAILED, "the aggregator wrote no result")
    if opts.json_output:
        if opts.statistics_only and result.statistics_path:
            print(Path(result.statistics_path).read_text(), flush=True)
        else:
            print((run.output / RESULT_FILE).read_text(), flush=True)
    return exit_codes.OK


def _done(opts: LocalRunOptions, job: str, code: int, message: str) -> int:
    """A run that ended without its result: with --json, says so as JSON too."""
    if opts.json_output:
        failed = {"job": job, "phase": "Failed", "exitCode": code, "message": message}
        print(json.dumps(failed), flush=True)
    return code
