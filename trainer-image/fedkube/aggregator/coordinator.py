"""The round engine: which sites are in, which round is open, what arrived, when it closes.

It knows nothing of gRPC: the service (``service.py``) turns calls into these methods and
refusals (``UpdateRefused``) into gRPC statuses; tests drive it directly too. Everything runs
on one asyncio loop, so state changes need no locks.

A round: open it, push a task to every connected site (and to sites that join while it is
open), fold each valid update into the running mean as it completes, and close when every
tasked, connected site has answered and the quorum is met, or at the deadline with a quorum.
Without a quorum by the deadline the attempt is dropped and the round tried again; three
failed attempts fail the job. After the last round the sites evaluate the final model.

Under secure aggregation a round has four stages, each a task pushed to the sites still in:
ADVERTISE_KEYS ends with the sites' public keys, SHARE_KEYS with their sealed key shares,
MASKED_UPDATE with their masked updates (trained once the shares are in; summed mod 2^32),
UNMASK with the shares that remove the masks from the sum. A stage that loses its quorum
fails the attempt. The key stages of the next round ride on this one's messages: keys on
the masked updates, the roster on the UNMASK task, shares on the reveals. When every
connected site shared that way, the next round opens at MASKED_UPDATE, so a round in steady
state is two exchanges, as a plain round is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fedkube.aggregator.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedkube.aggregator.secure_round import (
    MASKED_CODEC,
    masked_infos,
    secagg_params,
    unmasked_mean,
)
from fedkube.aggregator.updates import SpooledUpdate, check_tensors
from fedkube.errors import (
    DuplicateUpdate,
    InvalidUpdate,
    JobFailed,
    RoundClosed,
    SecureAggregationError,
    UnknownSite,
    UpdateRefused,
)
from fedkube.privacy.accountant import RdpAccountant
from fedkube.privacy.adaptive_clip import AdaptiveClip
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.keys import Context
from fedkube.secagg.server import SecureSum
from fedkube.spec.job import FederatedJob
from fedkube.strategy import DpFedAvgAccumulator, build_accumulator
from fedkube.strategy.base import Accumulator, Strategy
from fedkube.wire.tensors import Params, iter_chunks, specs_of, to_spec

log = logging.getLogger("fedkube.aggregator")

MAX_ROUND_ATTEMPTS = 3
# What a site's evaluation may report, for the global model and its personal one.
SCORES = ("loss", "accuracy", "auc", "personal_loss", "personal_accuracy", "personal_auc")


@dataclass
class SiteState:
    name: str
    queue: asyncio.Queue[pb.Event | None] | None = None
    last_round: int = 0
    samples: int = 0
    eval_samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.queue is not None

    def summary(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "lastRound": self.last_round,
            "samples": self.samples,
            "evalSamples": self.eval_samples,
            **{k: v for k, v in self.metrics.items() if k in SCORES or k == "epsilon"},
        }


@dataclass
class OpenRound:
    number: int
    stage: pb.Stage
    model_version: int
    opened_at: float
    deadline: float
    config: dict[str, float]
    evaluate: bool
    accumulator: Accumulator | None
    attempt: int = 1
    secure: SecureSum | None = None
    tasked: set[str] = field(default_factory=set)  # pushed this stage's task
    receiving: dict[str, SpooledUpdate] = field(default_factory=dict)
    done: dict[str, dict[str, float]] = field(default_factory=dict)  # answered this stage
    updates: dict[str, dict[str, float]] = field(default_factory=dict)  # site -> metrics
    samples: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # secure rounds' stages
    # Secure rounds: keys for the next round (attempt 1) that came with the masked updates.
    next_keys: dict[str, pb.KeyAdvertisement] = field(default_factory=dict)


def weighted(values: list[tuple[int, dict[str, float]]], key: str) -> float | None:
    pairs = [(n, m[key]) for n, m in values if key in m and n > 0]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


class Coordinator:
    def __init__(
        self,
        job: FederatedJob,
        params: Params,
        strategy: Strategy,
        checkpoint_dir: Any,
        *,
        clock: Any = time.monotonic,
    ) -> None:
        self.job = job
        self.spec = job.spec
        self.params = params
        self.infos = specs_of(params)
        self.strategy = strategy
        # An update is the model delta plus what the strategy asks of sites (SCAFFOLD).
        self.update_infos = self.infos + strategy.update_extras(self.infos)
        self.secagg = secagg_params(self.spec)
        self.quorum = self.spec.quorum()
        # The next round's key exchange, set up when this round's UNMASK stage opens.
        self.upcoming: SecureSum | None = None
        self.checkpoint_dir = checkpoint_dir
        self.clock = clock
        self.sites = {s.name: SiteState(s.name) for s in self.spec.sites}
        self.rounds_completed = 0
        self.history: list[dict[str, Any]] = []
        # Privacy spent by update-level DP, one Gaussian mechanism per round.
        self.accountant = RdpAccountant()
        self.adaptive_clip = AdaptiveClip.for_job(self.spec)
        self.evaluations: dict[int, dict[str, tuple[int, dict[str, float]]]] = {}
        self.initial_evaluation: dict[str, Any] = {}
        self.open: OpenRound | None = None
        self.round_closed_hooks: list[Any] = []  # called with the history entry
        # Writes the outputs when the job succeeds, before anyone can see it succeeded.
        self.on_succeeded: Any = None
        self.result: dict[str, Any] = {}
        self.phase = "Pending"
        self.message = ""
        self.started_wall = time.time()
        self._changed = asyncio.Event()

    # -- state from a checkpoint -------------------------------------------------------------

    def resume(self) -> bool:
        cp = load_checkpoint(self.checkpoint_dir, self.job.name, self.spec.training_fingerprint())
        if cp is None:
            return False
        # safetensors lists tensors by name; the wire order is the model's own.
        stored = {i.name: i for i in specs_of(cp.params)}
        if stored != {i.name: i for i in self.infos}:
            raise JobFailed(
                f"the checkpoint in {self.checkpoint_dir} holds a model of another shape"
            )
        self.params = {i.name: cp.params[i.name] for i in self.infos}
        self.strategy.load_state(cp.strategy_arrays, cp.strategy_meta)
        self.accountant = RdpAccountant.from_state(cp.privacy)
        if self.adaptive_clip is not None:
            self.adaptive_clip.load_state(cp.privacy)
        self.rounds_completed = cp.rounds_completed
        self.history = cp.history
        for name, s in cp.sites.items():
            if name in self.sites:
                self.sites[name].last_round = int(s.get("lastRound", 0))
                self.sites[name].samples = int(s.get("samples", 0))
        log.info("resumed from checkpoint after round %d", self.rounds_completed)
        return True

    def _save(self) -> None:
        save_checkpoint(
            self.checkpoint_dir,
            Checkpoint(
                job=self.job.name,
                fingerprint=self.spec.training_fingerprint(),
                rounds_completed=self.rounds_completed,
                params=self.params,
                strategy_arrays=self.strategy.state_arrays(),
                strategy_meta=self.strategy.state_meta(),
                history=self.history,
                sites={n: s.summary() for n, s in self.sites.items()},
                privacy={
                    **self.accountant.state(),
                    **(self.adaptive_clip.state() if self.adaptive_clip else {}),
                },
            ),
        )

    # -- what the service calls --------------------------------------------------------------

    def _known(self, job: str, site: str) -> SiteState:
        if job != self.job.name:
            raise UnknownSite(f"this aggregator runs job {self.job.name!r}, not {job!r}", site=site)
        if site not in self.sites:
            raise UnknownSite(f"site {site!r} is not a site of job {self.job.name!r}", site=site)
        return self.sites[site]

    def connect(self, job: str, site: str) -> asyncio.Queue[pb.Event | None]:
        state = self._known(job, site)
        if state.queue is not None:
            # A restarted trainer reconnects before its old stream is noticed dead.
            state.queue.put_nowait(None)
        state.queue = asyncio.Queue()
        log.info("site %s connected", site)
        # Secure aggregation's keys live in the site's process: whatever it advertised before
        # this connection may be gone with a restart, and must not put it in a roster.
        if self.upcoming is not None and site in self.upcoming.advertised:
            self.upcoming = None  # the next round makes the full exchange
        r = self.open
        roster_closed = False
        if r is not None and r.secure is not None:
            r.next_keys.pop(site, None)
            if r.stage == pb.ADVERTISE_KEYS and site in r.done:
                r.secure.withdraw(site)
                del r.done[site]
            roster_closed = r.stage != pb.ADVERTISE_KEYS
        if self.phase in ("Succeeded", "Failed"):
            state.queue.put_nowait(self._finished_event())
        elif r is not None and roster_closed:
            # The roster is closed: the site sits out the rest of this secure round.
            r.tasked.discard(site)
        elif r is not None and site not in r.done:
            self._push_task(state)
        self._notify()
        return state.queue

    def disconnect(self, site: str, queue: asyncio.Queue[pb.Event | None]) -> None:
        state = self.sites.get(site)
        if state is not None and state.queue is queue:
            state.queue = None
            log.info("site %s disconnected", site)
            self._notify()

    def model_for(self, job: str, site: str) -> tuple[pb.ModelHeader, Iterator[pb.TensorChunk]]:
        self._known(job, site)
        # A snapshot: the next model is built in new buffers, so this one stays whole.
        tensors = {**self.params, **self.strategy.broadcast_arrays()}
        header = pb.ModelHeader(
            job=self.job.name,
            round=self.open.number if self.open else self.rounds_completed,
            model_version=self.rounds_completed,
            tensors=[to_spec(i) for i in specs_of(tensors)],
            codec="raw",
        )
        return header, iter_chunks(list(tensors.values()))

    def begin_update(self, header: pb.UpdateHeader) -> SpooledUpdate:
        self._known(header.job, header.site)
        site, number = header.site, header.round
        r = self.open
        takes = pb.MASKED_UPDATE if self.secagg else pb.TRAIN
        if r is None or r.stage != takes or header.round != r.number:
            now = f"round {r.number} is open" if r and r.stage == takes else "no round is open"
            raise RoundClosed(
                f"round {header.round} is not open for updates ({now}); the update is dropped",
                site=site,
                round=number,
            )
        if header.site in r.done or header.site in r.receiving:
            raise DuplicateUpdate(
                f"site {header.site!r} already sent its update for round {r.number}",
                site=site,
                round=number,
            )
        if header.model_version != r.model_version:
            raise InvalidUpdate(
                f"the update was trained from model version {header.model_version}, but round "
                f"{r.number} distributes version {r.model_version}",
                site=site,
                round=number,
            )
        if r.secure is not None:
            if site not in r.tasked:
                raise RoundClosed(
                    f"site {site!r} is not among round {r.number}'s masked-update senders",
                    site=site,
                    round=number,
                )
            infos = masked_infos(self.update_infos)
            check_tensors(header, infos, codec=MASKED_CODEC)
            update = SpooledUpdate(header, infos)
        else:
            if header.num_samples <= 0:
                raise InvalidUpdate("num_samples must be positive", site=site, round=number)
            check_tensors(header, self.update_infos)
            update = SpooledUpdate(header, self.update_infos, self.spec.security.update_norm_bound)
        r.receiving[header.site] = update
        return update

    def finish_update(self, update: SpooledUpdate) -> None:
        """Fold a whole, checked update into the round. Refuses if the round closed meanwhile."""
        r = self.open
        try:
            update.finish()
            if r is None or r.number != update.round or r.receiving.get(update.site) is not update:
                raise RoundClosed(
                    f"round {update.round} closed while the update was arriving; it is dropped",
                    site=update.site,
                    round=update.round,
                )
            del r.receiving[update.site]
            if r.secure is not None:
                with contextlib.closing(update):
                    for tensor, start, values in update.pieces():
                        r.secure.fold(tensor, start, values)
                r.secure.commit(update.site)
                samples = int(r.secure.advertised[update.site].num_samples)
                self._take_next_keys(r, update.header)
            else:
                assert r.accumulator is not None
                r.accumulator.add(update)  # it owns the update from here
                samples = int(update.header.num_samples)
            r.done[update.site] = r.updates[update.site] = dict(update.header.metrics)
            r.samples[update.site] = samples
            site = self.sites[update.site]
            site.last_round = r.number
            site.samples = samples
            log.info("round %d: update from %s (%d samples)", r.number, update.site, samples)
            self._notify()
        except BaseException:
            update.close()
            raise

    def abandon_update(self, update: SpooledUpdate) -> None:
        r = self.open
        if r is not None and r.receiving.get(update.site) is update:
            del r.receiving[update.site]
            self._notify()
        update.close()

    def advertise_keys(self, msg: pb.KeyAdvertisement) -> None:
        r, secure = self._secure_stage(msg.job, msg.site, msg.round, msg.attempt, pb.ADVERTISE_KEYS)
        if msg.model_version != r.model_version:
            raise InvalidUpdate(
                f"keys for a model of version {msg.model_version}; round {r.number} trains "
                f"version {r.model_version}",
                site=msg.site,
                round=msg.round,
            )
        self._secure_answer(r, msg.site, lambda: secure.advertise(msg))

    def share_keys(self, msg: pb.KeyShares) -> None:
        r, secure = self._secure_stage(msg.job, msg.site, msg.round, msg.attempt, pb.SHARE_KEYS)
        self._secure_answer(r, msg.site, lambda: secure.add_shares(msg))

    def reveal_shares(self, msg: pb.Reveal) -> None:
        r, secure = self._secure_stage(msg.job, msg.site, msg.round, msg.attempt, pb.UNMASK)
        self._secure_answer(r, msg.site, lambda: secure.add_reveal(msg))
        if not msg.HasField("next_round_shares"):
            return
        shares, upcoming = msg.next_round_shares, self.upcoming
        expected = (msg.job, msg.site, r.number + 1, 1)
        if upcoming is None or (shares.job, shares.site, shares.round, shares.attempt) != expected:
            log.warning("site %s: shares for a next round that is not set up; ignored", msg.site)
            return
        try:
            upcoming.add_shares(shares)
        except SecureAggregationError as e:
            log.warning("site %s: next round's shares ignored: %s", msg.site, e)

    def _take_next_keys(self, r: OpenRound, header: pb.UpdateHeader) -> None:
        """Keep the next round's keys a masked update carried, if they are for it."""
        assert r.secure is not None
        if not header.HasField("next_round_keys"):
            return
        keys = header.next_round_keys
        # The next round trains the model this round makes.
        expected = (header.job, header.site, r.number + 1, 1, header.model_version + 1)
        if (keys.job, keys.site, keys.round, keys.attempt, keys.model_version) != expected:
            log.warning("site %s: next round's keys name another round; ignored", header.site)
            return
        try:
            SecureSum.check_keys(keys, r.secure.params)
        except SecureAggregationError as e:
            log.warning("site %s: next round's keys ignored: %s", header.site, e)
            return
        r.next_keys[header.site] = keys

    def _secure_stage(
        self, job: str, site: str, number: int, attempt: int, stage: pb.Stage
    ) -> tuple[OpenRound, SecureSum]:
        self._known(job, site)
        r = self.open
        at = (number, attempt, stage)
        if r is None or r.secure is None or (r.number, r.attempt, r.stage) != at:
            raise RoundClosed(
                f"round {number} (attempt {attempt}) is not at secure-aggregation stage "
                f"{pb.Stage.Name(stage)}; the message is dropped",
                site=site,
                round=number,
            )
        if site in r.done:
            raise DuplicateUpdate(
                f"site {site!r} already answered stage {pb.Stage.Name(stage)} of round {number}",
                site=site,
                round=number,
            )
        if site not in r.tasked:
            raise RoundClosed(
                f"site {site!r} is not a participant of this stage of round {number}",
                site=site,
                round=number,
            )
        return r, r.secure

    def _secure_answer(self, r: OpenRound, site: str, take: Any) -> None:
        try:
            take()
        except SecureAggregationError as e:
            raise InvalidUpdate(str(e), site=site, round=r.number) from None
        r.done[site] = {}
        self._notify()

    def report_evaluation(self, msg: pb.Evaluation) -> None:
        site = self._known(msg.job, msg.site)
        if msg.model_version > self.rounds_completed or msg.model_version < 0:
            raise InvalidUpdate(
                f"evaluation names model version {msg.model_version}, which does not exist",
                site=msg.site,
                round=msg.round,
            )
        metrics = dict(msg.metrics)
        bad = [k for k, v in metrics.items() if v != v or v in (float("inf"), float("-inf"))]
        if bad or msg.num_samples <= 0:
            raise InvalidUpdate(
                f"evaluation has non-finite metrics {bad} or no samples",
                site=msg.site,
                round=msg.round,
            )
        self.evaluations.setdefault(msg.model_version, {})[msg.site] = (msg.num_samples, metrics)
        if msg.model_version == self.rounds_completed:
            site.metrics = metrics
            site.eval_samples = msg.num_samples
        self._record_evaluation(msg.model_version)
        r = self.open
        if r is not None and r.stage == pb.EVALUATE and msg.model_version == r.model_version:
            r.done[msg.site] = metrics
            r.samples[msg.site] = msg.num_samples
        self._notify()

    # -- the round loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run every round that is left, then the final evaluation. Raises JobFailed."""
        try:
            self.phase = "Running"
            await self._wait_for_sites()
            while self.rounds_completed < self.spec.rounds:
                await self._run_round(self.rounds_completed + 1)
            self.phase = "Evaluating"
            await self._final_evaluation()
            self.phase = "Succeeded"
            self.message = f"completed {self.rounds_completed} rounds"
            if self.on_succeeded is not None:
                self.result = self.on_succeeded(self)
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

    async def _wait_for_sites(self) -> None:
        """At start (or restart), give every site a moment to connect before round one."""
        until = self.clock() + self.spec.join_grace_seconds
        while self.clock() < until:
            if all(s.connected for s in self.sites.values()):
                return
            await self._wait_change(until)

    async def _run_round(self, number: int) -> None:
        for attempt in range(1, MAX_ROUND_ATTEMPTS + 1):
            r = self._open_round(number, pb.TRAIN, self.rounds_completed, attempt)
            try:
                mean = await (self._secure_stages(r) if r.secure else self._plain_stage(r))
            except SecureAggregationError as e:
                mean = None
                log.warning("round %d attempt %d: %s", number, attempt, e)
            if mean is not None:
                self._close_train_round(r, mean)
                return
            self._abandon_round(r)
            log.warning(
                "round %d attempt %d: %d of %d sites needed answered stage %s before the deadline",
                number,
                attempt,
                len(r.done),
                self.quorum,
                pb.Stage.Name(r.stage),
            )
        connected = sorted(n for n, s in self.sites.items() if s.connected)
        needed = (
            f"minSitesPerRound={self.spec.min_sites_per_round}"
            if self.quorum == self.spec.min_sites_per_round
            else f"the secure-aggregation threshold of {self.quorum} sites"
        )
        raise JobFailed(
            f"round {number} did not reach {needed} within roundTimeoutSeconds="
            f"{self.spec.round_timeout_seconds:g} in {MAX_ROUND_ATTEMPTS} attempts; connected "
            f"sites: {', '.join(connected) or 'none'}"
        )

    async def _stage(self, r: OpenRound, needed: int) -> bool:
        """Wait until every tasked, connected site answered (with at least ``needed``), or
        the deadline; whether ``needed`` answered."""
        while self.clock() < r.deadline and (len(r.done) < needed or self._waiting_on(r)):
            await self._wait_change(r.deadline)
        return len(r.done) >= needed

    async def _plain_stage(self, r: OpenRound) -> Params | None:
        if not await self._stage(r, self.quorum):
            return None
        assert r.accumulator is not None
        for update in list(r.receiving.values()):
            update.close()  # late uploads are refused when they finish (RoundClosed)
        return r.accumulator.mean()

    async def _secure_stages(self, r: OpenRound) -> Params | None:
        secure = r.secure
        assert secure is not None
        if r.stage == pb.ADVERTISE_KEYS:  # not opened with the last round's exchange
            if not await self._stage(r, self.quorum):
                return None
            secure.close_roster(sorted(r.done))
            self._next_stage(r, pb.SHARE_KEYS, set(r.done))
            if not await self._stage(r, self.quorum):
                return None
            self._next_stage(r, pb.MASKED_UPDATE, set(r.done))
        if not await self._stage(r, self.quorum):
            return None
        for update in list(r.receiving.values()):
            update.close()
        self.upcoming = self._next_round_roster(r)
        self._next_stage(r, pb.UNMASK, set(r.done))
        if not await self._stage(r, secure.params.threshold):
            return None
        return unmasked_mean(secure, self.update_infos)

    def _next_stage(self, r: OpenRound, stage: pb.Stage, participants: set[str]) -> None:
        now = time.time()
        r.stage_seconds[pb.Stage.Name(r.stage)] = now - r.opened_at - sum(r.stage_seconds.values())
        r.stage, r.tasked, r.done = stage, set(), {}
        for name in sorted(participants):
            if self.sites[name].connected:
                self._push_task(self.sites[name])
        log.info("round %d: %s with %d sites", r.number, pb.Stage.Name(stage), len(r.tasked))

    def _open_round(
        self, number: int, stage: pb.Stage, version: int, attempt: int = 1
    ) -> OpenRound:
        every = self.spec.evaluation.every_rounds
        r = OpenRound(
            number=number,
            stage=stage,
            model_version=version,
            opened_at=time.time(),
            deadline=self.clock() + self.spec.round_timeout_seconds,
            config=self.strategy.client_config(number) if stage == pb.TRAIN else {},
            evaluate=stage == pb.EVALUATE or version % every == 0,
            accumulator=(
                build_accumulator(self.spec, self.strategy, self.update_infos, self.adaptive_clip)
                if stage == pb.TRAIN and self.secagg is None
                else None
            ),
            attempt=attempt,
            secure=(
                SecureSum(
                    Context(self.job.name, number, attempt),
                    self.secagg,
                    [i.size for i in self.update_infos],
                )
                if stage == pb.TRAIN and self.secagg is not None
                else None
            ),
        )
        self.open = r
        if r.secure is not None and self._open_with_upcoming(r):
            log.info("round %d open (MASKED_UPDATE, keys shared in the last round)", number)
            return r
        if r.secure is not None:
            r.stage = pb.ADVERTISE_KEYS
        for s in self.sites.values():
            if s.connected:
                self._push_task(s)
        log.info("round %d open (%s)", number, pb.Stage.Name(r.stage))
        return r

    def _next_round_roster(self, r: OpenRound) -> SecureSum | None:
        """The next round's exchange, its roster closed from the keys that came with this
        round's masked updates; None when too few sites sent keys (or this is the last)."""
        assert r.secure is not None and self.secagg is not None
        usable = {
            n: k
            for n, k in r.next_keys.items()
            if n in r.secure.survivors and self.sites[n].connected
        }
        if r.number >= self.spec.rounds or len(usable) < self.quorum:
            return None
        upcoming = SecureSum(
            Context(self.job.name, r.number + 1, 1),
            self.secagg,
            [i.size for i in self.update_infos],
        )
        for name in sorted(usable):
            upcoming.advertise(usable[name])
        upcoming.close_roster(sorted(usable))
        return upcoming

    def _open_with_upcoming(self, r: OpenRound) -> bool:
        """Open at MASKED_UPDATE when every connected site shared keys for this round with
        its last reveal; any site without them (new, restarted, dropped) means the full
        exchange, so no connected site is left out of a round."""
        upcoming, self.upcoming = self.upcoming, None
        assert r.secure is not None
        if upcoming is None or upcoming.context != r.secure.context:
            return False
        connected = {n for n, s in self.sites.items() if s.connected}
        if len(upcoming.sharers) < self.quorum or not connected <= set(upcoming.sharers):
            return False
        r.secure = upcoming
        r.stage = pb.MASKED_UPDATE
        for name in sorted(connected):
            self._push_task(self.sites[name])
        return True

    def _push_task(self, site: SiteState) -> None:
        r = self.open
        assert r is not None and site.queue is not None
        r.tasked.add(site.name)
        task = pb.Task(
            job=self.job.name,
            round=r.number,
            stage=r.stage,
            model_version=r.model_version,
            evaluate=r.evaluate,
            config=r.config,
            deadline_unix_seconds=time.time() + (r.deadline - self.clock()),
            attempt=r.attempt,
        )
        if r.secure is not None:
            task.secure.params.CopyFrom(r.secure.params)
            task.secure.roster.extend(r.secure.roster)
            if r.stage == pb.MASKED_UPDATE:
                task.secure.inbox.extend(r.secure.inbox(site.name))
            if r.stage == pb.UNMASK:
                survivors, dropped = r.secure.unmask_request()
                task.secure.survivors.extend(survivors)
                task.secure.dropped.extend(dropped)
                upcoming = self.upcoming
                if upcoming is not None and site.name in upcoming.advertised:
                    task.secure.next_roster.extend(upcoming.roster)
        site.queue.put_nowait(pb.Event(task=task))

    def _waiting_on(self, r: OpenRound) -> set[str]:
        connected = {n for n, s in self.sites.items() if s.connected}
        return ((r.tasked & connected) | set(r.receiving)) - set(r.done)

    def _close_train_round(self, r: OpenRound, mean: Params) -> None:
        self.params = self.strategy.apply(self.params, mean, r.number, participants=len(r.updates))
        self.rounds_completed = r.number
        closed = time.time()
        train_seconds = [m.get("train_seconds", 0.0) for m in r.updates.values()]
        pairs = [(r.samples[s], m) for s, m in r.updates.items()]
        self.history.append(
            {
                "round": r.number,
                "sites": sorted(r.updates),
                "samples": sum(r.samples.values()),
                "trainLoss": weighted(pairs, "train_loss"),
                "openedAt": r.opened_at,
                "closedAt": closed,
                "durationSeconds": closed - r.opened_at,
                "maxTrainSeconds": max(train_seconds),
            }
        )
        if r.secure is not None:
            # Masked updates that arrived from sites that then dropped are in the sum too.
            r.stage_seconds["UNMASK"] = closed - r.opened_at - sum(r.stage_seconds.values())
            self.history[-1]["secureAggregation"] = {
                "revealedBy": len(r.done),
                "dropped": r.secure.unmask_request()[1],
                "stageSeconds": r.stage_seconds,
            }
        dp = self.spec.privacy.update_level
        if dp is not None:
            # Site-level: the share of sites in the round stands for the sampling rate.
            self.accountant.step(dp.noise_multiplier, len(r.updates) / len(self.sites))
            self.history[-1]["epsilon"] = self.accountant.epsilon(dp.delta)
            if self.adaptive_clip is not None and isinstance(r.accumulator, DpFedAvgAccumulator):
                self.history[-1]["clipNorm"] = self.adaptive_clip.clip_norm
                self.history[-1]["unclippedShare"] = self.adaptive_clip.observe(
                    r.accumulator.unclipped, r.accumulator.count
                )
        self.open = None
        self._save()
        for hook in self.round_closed_hooks:
            hook(self.history[-1])
        log.info("round %d closed with %d sites", r.number, len(r.updates))

    def _abandon_round(self, r: OpenRound) -> None:
        self.upcoming = None
        for update in list(r.receiving.values()):
            update.close()
        if r.accumulator is not None:
            r.accumulator.discard()
        self.open = None

    async def _final_evaluation(self) -> None:
        r = self._open_round(self.rounds_completed, pb.EVALUATE, self.rounds_completed)
        while self._waiting_on(r) and self.clock() < r.deadline:
            await self._wait_change(r.deadline)
        self.open = None

    def _record_evaluation(self, version: int) -> None:
        reports = list(self.evaluations.get(version, {}).values())
        summary: dict[str, Any] = {
            "evalSites": len(reports),
            "evalSamples": sum(n for n, _ in reports),
        }
        for key in SCORES:
            if any(key in m for _, m in reports):
                summary[key] = weighted(reports, key)
        accuracies = [m["accuracy"] for _, m in reports if "accuracy" in m]
        if accuracies:
            # Best site minus worst: how unevenly the global model serves the sites.
            summary["accuracySpread"] = max(accuracies) - min(accuracies)
        if version == 0:
            self.initial_evaluation = summary
        elif version <= len(self.history):
            self.history[version - 1].update(summary)

    # -- plumbing ----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    async def _wait_change(self, until: float) -> None:
        timeout = max(0.0, until - self.clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    def _finished_event(self) -> pb.Event:
        return pb.Event(
            finished=pb.Finished(
                job=self.job.name,
                rounds_completed=self.rounds_completed,
                succeeded=self.phase == "Succeeded",
                message=self.message,
            )
        )

    # -- what is reported --------------------------------------------------------------------

    def latest_global(self) -> dict[str, Any]:
        for h in reversed(self.history):
            if h.get("accuracy") is not None:
                keys = ("loss", "accuracy", "accuracySpread", *SCORES[2:])
                return {"round": h["round"], **{k: h[k] for k in keys if k in h}}
        return {}

    def privacy(self) -> dict[str, Any]:
        dp = self.spec.privacy.update_level
        if dp is None:
            return {}
        spent = self.history[-1].get("epsilon", 0.0) if self.history else 0.0
        return {
            "epsilon": spent,
            "delta": dp.delta,
            "noiseMultiplier": dp.noise_multiplier,
            "clipNorm": self.adaptive_clip.clip_norm if self.adaptive_clip else dp.clip_norm,
        }

    def progress(self) -> dict[str, Any]:
        return {
            "job": self.job.name,
            "phase": self.phase,
            "message": self.message,
            "round": self.rounds_completed,
            "totalRounds": self.spec.rounds,
            "openRound": self.open.number if self.open else None,
            "openStage": pb.Stage.Name(self.open.stage) if self.open else None,
            "sitesConnected": sorted(n for n, s in self.sites.items() if s.connected),
            "global": self.latest_global(),
            "sites": {n: s.summary() for n, s in self.sites.items()},
            "history": self.history,
            "privacy": self.privacy(),
            "initialEvaluation": self.initial_evaluation,
            "modelPath": self.result.get("modelPath"),
        }


__all__ = ["Coordinator", "UpdateRefused"]
