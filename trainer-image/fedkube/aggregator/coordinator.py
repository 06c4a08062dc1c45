"""The round engine: which sites are in, which round is open, what arrived, when it closes.

It knows nothing of any transport: the gRPC service (``service.py``) and the in-process link
(``fedkube.transport.inprocess``) turn calls into these methods, and refusals
(``UpdateRefused``) into statuses. Everything but a fold runs on one asyncio loop: no locks.

A round: open it, push a task to every connected site (and to sites that join while it is
open), fold each valid update into the running mean as it completes (on a worker thread,
``Folds``, while the loop serves the other transfers), and close when every tasked,
connected site has answered and the quorum is met, or at the deadline with a quorum.
Without a quorum the attempt is dropped and the round tried again; three failed attempts fail
the job. After the last round the sites evaluate the final model. Before round one, a job over
sites' own files runs round 0 (``StatisticsRound``). Secure aggregation's stages are driven by
``SecureRounds``, the record of rounds kept by ``RoundLog``, the sites' evaluations by
``Evaluations``, update-level privacy's accounting by ``PrivacyHook``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedkube.accumulate import build_accumulator
from fedkube.aggregator.declines import TaskDeclines, cannot_reach, declines_note
from fedkube.aggregator.evaluations import Evaluations, held_out_noise
from fedkube.aggregator.folding import Folds
from fedkube.aggregator.messages import (
    finished_event,
    model_header,
    round_failed,
    task_message,
)
from fedkube.aggregator.model_guard import apply_checked
from fedkube.aggregator.persistence import save
from fedkube.aggregator.privacy_hook import PrivacyHook
from fedkube.aggregator.reception import UpdateReception
from fedkube.aggregator.round_log import RoundLog
from fedkube.aggregator.round_shapes import RoundShapes
from fedkube.aggregator.rounds import EventQueue, OpenRound, SiteState
from fedkube.aggregator.sample_bounds import SampleBounds
from fedkube.aggregator.secure_calls import SecureCalls
from fedkube.aggregator.secure_rounds import SecureRounds
from fedkube.aggregator.site_sampling import draw_sample, in_sample
from fedkube.aggregator.statistics_round import StatisticsRound
from fedkube.codec import build_codec
from fedkube.codec.downlink import Downlink
from fedkube.errors import (
    JobFailed,
    SecureAggregationError,
    UnknownSite,
)
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.params import secagg_params
from fedkube.spec.job import FederatedJob
from fedkube.spec.preprocessing import Preprocessing
from fedkube.spec.progress import JobResult, Phase, RoundRecord
from fedkube.spec.statistics import StatisticsReport
from fedkube.strategy.base import Strategy
from fedkube.wire.tensors import Params, specs_of

log = logging.getLogger("fedkube.aggregator")

MAX_ROUND_ATTEMPTS = 3


class Coordinator(SecureCalls, TaskDeclines):
    def __init__(
        self,
        job: FederatedJob,
        params: Params,
        strategy: Strategy,
        checkpoint_dir: Path | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        statistics_only: bool = False,
    ) -> None:
        self.job = job
        self.spec = job.spec
        self.params = params
        self.infos = specs_of(params)
        self.strategy = strategy
        # An update is the model delta plus what the strategy asks of sites (SCAFFOLD).
        self.update_infos = self.infos + strategy.update_extras(self.infos)
        # The codec sites' updates travel in (None: float32 as trained), and the model's.
        self.uplink = build_codec(self.spec.communication.uplink)
        down = build_codec(self.spec.communication.downlink)
        self.downlink = Downlink(down) if down is not None else None
        params_secure = secagg_params(self.spec)
        self.secure = SecureRounds(self, params_secure) if params_secure is not None else None
        self.quorum = self.spec.quorum()
        self.checkpoint_dir = checkpoint_dir  # None: keep no checkpoint (the simulation)
        self.clock = clock
        self.sites = {s.name: SiteState(s.name) for s in self.spec.sites}
        self.rounds_completed = 0
        self.restarts = 0  # resumes from a checkpoint, over the job's life
        self.log = RoundLog(held_out_noise=held_out_noise(self.spec))
        self.privacy = PrivacyHook(self.spec)
        self.open: OpenRound | None = None
        self.folds = Folds()  # plain updates' folds, beside the event loop
        self.evaluations = Evaluations(self)
        # Round 0: the federated statistics and the preprocessing the sites agree from them.
        self.round0 = StatisticsRound(self)
        self.shapes = RoundShapes(
            self.update_infos,
            self.evaluations.layout.masked_info(),
            self.round0.layout.infos(),
            self.spec.evaluation.every_rounds,
        )
        self.sample_bounds = SampleBounds(self.spec, self.round0.site_rows)
        self.statistics_only = statistics_only
        self.preprocessing: Preprocessing | None = None
        self.statistics: StatisticsReport | None = None
        self.round_closed_hooks: list[Callable[[RoundRecord], None]] = []
        # Writes the outputs when the job succeeds, before anyone can see it succeeded.
        self.on_succeeded: Callable[[Coordinator], JobResult] | None = None
        self.result: JobResult | None = None
        self.phase: Phase = "Pending"
        self.message = ""
        self.started_wall = time.time()
        self._changed = asyncio.Event()

    @property
    def history(self) -> list[RoundRecord]:
        return self.log.history

    # -- what a site calls, through any transport ---------------------------------------------

    def known(self, job: str, site: str) -> SiteState:
        if job != self.job.name:
            raise UnknownSite(f"this aggregator runs job {self.job.name!r}, not {job!r}", site=site)
        if site not in self.sites:
            raise UnknownSite(f"site {site!r} is not a site of job {self.job.name!r}", site=site)
        return self.sites[site]

    def connect(self, job: str, site: str) -> EventQueue:
        state = self.known(job, site)
        if state.queue is not None:
            # A restarted trainer reconnects before its old stream is noticed dead.
            state.queue.put_nowait(None)
        state.queue = asyncio.Queue()
        log.info("site %s connected", site)
        r = self.open
        roster_closed = self.secure.on_connect(r, site) if self.secure is not None else False
        if self.phase in ("Succeeded", "Failed"):
            state.queue.put_nowait(self._finished_event())
        elif r is not None and roster_closed:
            # The roster is closed: the site sits out the rest of this secure round.
            r.tasked.discard(site)
        elif r is not None and site not in r.done and in_sample(r, site, self.spec.sites_per_round):
            self._push_task(state)
        self.notify()
        return state.queue

    def disconnect(self, site: str, queue: EventQueue) -> None:
        state = self.sites.get(site)
        if state is not None and state.queue is queue:
            state.queue = None
            log.info("site %s disconnected", site)
            self.notify()

    def model_for(self, request: pb.ModelRequest) -> tuple[pb.ModelHeader, list[np.ndarray]]:
        """The model's header for this site, and the arrays to send after it, in order."""
        self.known(request.ref.job, request.ref.site)
        # A snapshot: the next model is built in new buffers, so this one stays whole.
        version, r, downlink = self.rounds_completed, self.open, self.downlink
        codec, base, model = (pb.RAW, 0, self.params) if downlink is None else (
            downlink.model_for(self.params, version, request))  # fmt: skip
        tensors = {**model, **self.strategy.broadcast_arrays()}
        if r is not None:
            r.bytes_sent += sum(a.nbytes for a in tensors.values())
        header = model_header(self.job.name, r, version, request.ref.site, tensors, codec, base)
        return header, list(tensors.values())

    def reception(self, authorise: Callable[[str], None] | None = None) -> UpdateReception:
        """Where one update stream goes; ``authorise(site)`` checks the sender's identity."""
        return UpdateReception(self, authorise)

    def report_evaluation(self, msg: pb.Evaluation) -> None:
        self.evaluations.report(msg)

    # -- the round loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run every round that is left, then the final evaluation. Raises JobFailed."""
        try:
            self.phase = "Running"
            await self._wait_for_sites()
            if self.statistics_only or (
                self.spec.needs_statistics() and self.preprocessing is None
            ):
                await self.round0.run()
            if self.statistics_only:
                self._succeed(f"statistics of {len(self.round0.schemas)} sites")
                return
            while self.rounds_completed < self.spec.rounds:
                await self._run_round(self.rounds_completed + 1)
            self.phase = "Evaluating"
            await self.evaluations.final()
            self._succeed(f"completed {self.rounds_completed} rounds")
        except JobFailed as e:
            self.phase = "Failed"
            self.message = str(e)
            raise
        finally:
            self.open = None
            # Only a job that ended says so; a stopped aggregator (a signal, a pod deleted)
            # just drops the streams, and trainers reconnect to its successor.
            if self.phase in ("Succeeded", "Failed"):
                for s in self.sites.values():
                    if s.queue is not None:
                        s.queue.put_nowait(self._finished_event())

    def _succeed(self, message: str) -> None:
        self.phase, self.message = "Succeeded", message
        if self.on_succeeded is not None:
            self.result = self.on_succeeded(self)

    async def _wait_for_sites(self) -> None:
        """At start (or restart), give every site a moment to connect before round one."""
        until = self.clock() + self.spec.join_grace_seconds
        while self.clock() < until:
            if all(s.connected for s in self.sites.values()):
                return
            await self._wait_change(until)

    async def _run_round(self, number: int) -> None:
        for attempt in range(1, MAX_ROUND_ATTEMPTS + 1):
            r = self.open_round(number, pb.TRAIN, self.rounds_completed, attempt)
            try:
                mean = await (self.secure.run_stages(r) if self.secure else self._plain_stage(r))
            except SecureAggregationError as e:
                mean = None
                log.warning("round %d attempt %d: %s", number, attempt, e)
            if mean is not None and self._close_train_round(r, mean):
                return
            self.abandon_round()
            if mean is None:
                stage, done = pb.Stage.Name(r.stage), len(r.done)
                why = f"; {declines_note(r.declined)}" if r.declined else " in time"
                log.warning(
                    "round %d attempt %d: %d of %d sites needed answered stage %s%s",
                    *(number, attempt, done, self.quorum, stage, why),
                )
        connected = sorted(n for n, s in self.sites.items() if s.connected)
        note = declines_note(r.declined)
        failed = round_failed(self.spec, number, self.quorum, connected, MAX_ROUND_ATTEMPTS, note)
        raise JobFailed(failed)

    async def stage_answered(self, r: OpenRound, needed: int) -> bool:
        """Wait until every tasked, connected site answered (with at least ``needed``), or
        the deadline, or until the sites that declined leave too few; whether ``needed``
        answered."""
        while self.clock() < r.deadline and (len(r.done) < needed or self._waiting_on(r)):
            if cannot_reach(r, len(self.sites), needed):
                break
            await self._wait_change(r.deadline)
        return len(r.done) >= needed

    async def _plain_stage(self, r: OpenRound) -> Params | None:
        await self.stage_answered(r, self.quorum)
        await self.folds.settle(r)  # an update whole before the deadline counts
        if len(r.done) < self.quorum:
            return None
        assert r.accumulator is not None
        for update in list(r.receiving.values()):
            update.close()  # late uploads are refused when they finish (RoundClosed)
        return r.accumulator.mean()

    def next_stage(self, r: OpenRound, stage: pb.Stage, participants: set[str]) -> None:
        now = time.time()
        r.stage_seconds[pb.Stage.Name(r.stage)] = now - r.opened_at - sum(r.stage_seconds.values())
        r.stage, r.tasked, r.done = stage, set(), {}
        for name in sorted(participants):
            if self.sites[name].connected:
                self._push_task(self.sites[name])
        log.info("round %d: %s with %d sites", r.number, pb.Stage.Name(stage), len(r.tasked))

    def open_round(self, number: int, stage: pb.Stage, version: int, attempt: int = 1) -> OpenRound:
        trains = stage == pb.TRAIN
        r = OpenRound(
            number=number,
            stage=stage,
            model_version=version,
            opened_at=time.time(),
            deadline=self.clock() + self.spec.round_timeout_seconds,
            config=self.strategy.client_config(number) if trains else {},
            evaluate=stage == pb.EVALUATE or (trains and self.shapes.evaluates(version)),
            accumulator=(
                build_accumulator(self.spec, self.update_infos, self.privacy.adaptive_clip)
                if trains and self.secure is None
                else None
            ),
            attempt=attempt,
            scores_only=stage == pb.EVALUATE and self.secure is not None,
        )
        if self.secure is not None and (trains or r.scores_only):
            infos = self.shapes.training(r.evaluate, r.scores_only)
            r.secure = self.secure.new_sum(number, attempt, infos)
        self.open = r
        asked = {n for n, s in self.sites.items() if s.connected}
        if trains and self.spec.sites_per_round is not None:
            r.sample = asked = draw_sample(r, asked, self.spec.sites_per_round, self.spec.task.seed)
        ahead = r.secure is not None and self.secure is not None and self.secure.open(r, asked)
        for name in sorted(asked):
            self._push_task(self.sites[name])
        ahead_note = ", keys shared in the last round" if ahead else ""
        log.info("round %d open (%s%s)", number, pb.Stage.Name(r.stage), ahead_note)
        return r

    def _push_task(self, site: SiteState) -> None:
        r = self.open
        assert r is not None and site.queue is not None
        r.tasked.add(site.name)
        r.declined.pop(site.name, None)  # asked again (it reconnected): it may answer now
        if r.evaluate and r.secure is None:
            self.log.expect(r.model_version, site.name)
        deadline = time.time() + (r.deadline - self.clock())
        task = task_message(self.job.name, r, site.name, deadline, self.preprocessing)
        if r.secure is not None and self.secure is not None:
            self.secure.fill_task(task, r, site.name)
        site.queue.put_nowait(pb.Event(task=task))

    def _waiting_on(self, r: OpenRound) -> set[str]:
        connected = {n for n, s in self.sites.items() if s.connected}
        return ((r.tasked & connected) | set(r.receiving)) - set(r.done) - set(r.declined)

    def _close_train_round(self, r: OpenRound, mean: Params) -> bool:
        """Publish the round's model; False (nothing changed) when it would not be finite."""
        new, problem = apply_checked(self.strategy, self.params, mean, r.number, len(r.updates))
        if new is None:
            log.warning("round %d attempt %d: %s; not published", r.number, r.attempt, problem)
            return False
        self.params = new
        self.rounds_completed = r.number
        if self.downlink is not None:
            # The last model goes out whole: the final evaluation scores the saved model.
            self.downlink.publish(self.params, r.number, whole=r.number >= self.spec.rounds)
        secure = None
        if r.secure is not None and self.secure is not None:
            secure = self.secure.record(r, time.time() - r.opened_at)
        record = self.log.close_round(r, secure)
        if r.score_totals is not None:
            self.log.record_totals(r.model_version, len(r.updates), r.score_totals)
        elif r.evaluate:
            # Every site that trained reported its evaluation first: the figure is whole.
            self.log.finalize(r.model_version)
        self.privacy.after_round(record, len(r.updates), r.accumulator)
        self.open = None
        save(self)
        for hook in self.round_closed_hooks:
            hook(record)
        log.info("round %d closed with %d sites", r.number, len(r.updates))
        return True

    def close_statistics_round(self, r: OpenRound) -> None:
        self.open = None
        save(self)

    def abandon_round(self) -> None:
        r = self.open
        if r is None:
            return
        if self.secure is not None:
            self.secure.abandon()
        for update in list(r.receiving.values()):
            update.close()
        if r.accumulator is not None:
            r.accumulator.discard()
        self.open = None

    # -- plumbing ----------------------------------------------------------------------------

    def notify(self) -> None:
        self._changed.set()

    async def _wait_change(self, until: float) -> None:
        timeout = max(0.0, until - self.clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    def _finished_event(self) -> pb.Event:
        succeeded = self.phase == "Succeeded"
        return finished_event(self.job.name, self.rounds_completed, succeeded, self.message)
