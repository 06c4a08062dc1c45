"""`fedkube trainer`: one site's long-lived process. It dials out to the aggregator, holds one
Subscribe stream open, and acts on each task the moment it arrives: fetch the model, evaluate
it, train, send the update. When the aggregator is away it reconnects with backoff.

Under secure aggregation (``fedkube.secagg.site``) a site trains once the round's key shares
are in, and only the masked update leaves it. Each masked update carries the site's keys for
the next round, and each reveal its shares for that round, so in steady state a secure round
is two exchanges: the masked update and the reveal."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from fedkube.codec.base import Codec
from fedkube.codec.downlink import HeldModel
from fedkube.codec.error_feedback import UplinkEncoder
from fedkube.errors import AggregatorUnavailable, JobFailed, SecureAggregationError, UpdateRefused
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.signed_keys import SigningIdentity
from fedkube.secagg.site import SiteSession
from fedkube.spec.preprocessing import Preprocessing
from fedkube.stats.score_counts import SCORE_COUNTS, noised, to_masked
from fedkube.trainer.local import LocalTrainer, Scores
from fedkube.transport.link import SiteLink
from fedkube.wire.tensors import Params, assemble, from_spec, iter_parts, specs_of, to_spec

log = logging.getLogger("fedkube.trainer")
M = TypeVar("M")
R = TypeVar("R")


@dataclass(frozen=True)
class Backoff:
    first: float = 0.1
    most: float = 5.0
    give_up_after: float = 900.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay * random.uniform(0.5, 1.0)  # jitter spreads the sites' retries
            delay = min(self.most, delay * 2)


STATISTICS_ROUND = 0


class SiteSource(Protocol):
    """A site's rows before the agreed preprocessing: they answer round 0, then make the
    trainer once the preprocessing is known (``fedkube.trainer.site.PendingSite``)."""

    @property
    def rows(self) -> int: ...

    def schema(self, secure: bool) -> pb.SiteSchema: ...

    def statistics(self, secure: bool) -> Params: ...

    def trainer(self, preprocessing: Preprocessing | None) -> LocalTrainer: ...


def session_matches(session: SiteSession, task: pb.Task) -> bool:
    return (session.context.round, session.context.attempt) == (task.ref.round, task.ref.attempt)


class TrainerClient:
    def __init__(
        self,
        job: str,
        site: str,
        link: SiteLink,
        trainer: LocalTrainer | SiteSource,
        backoff: Backoff = Backoff(),
        secure: pb.SecAggParams | None = None,
        private: bool = False,
        uplink: UplinkEncoder | None = None,
        downlink: Codec | None = None,
        identity: SigningIdentity | None = None,
        job_sites: frozenset[str] | None = None,
        score_noise: float | None = None,
    ) -> None:
        self.job = job
        # evaluation.noiseMultiplier: this site's counts leave it noised by this much.
        self.score_noise = score_noise
        # Under secure aggregation: the counts of the evaluation this task made, to be masked.
        self.score_counts: np.ndarray | None = None
        # Secure aggregation under mutual TLS: the site's certificate and key, which sign its
        # keys and check everyone else's; and the sites its manifest lists.
        self.identity = identity
        self.job_sites = job_sites
        self.site = site
        self.link = link
        self.endpoint = link.endpoint
        # The trainer exists once the preprocessing is known; until then the source answers.
        self._trainer: LocalTrainer | None = trainer if isinstance(trainer, LocalTrainer) else None
        self.source: SiteSource | None = None if isinstance(trainer, LocalTrainer) else trainer
        self.backoff = backoff
        # The codec updates travel in, with what it left out so far (None: float32).
        self.uplink = uplink
        # Under a downlink codec: the model this site holds, to add the next change to.
        self.downlink = HeldModel(downlink) if downlink is not None else None
        # What this site's own copy of the manifest says secure aggregation must be (None:
        # the job has none). A task that says otherwise is refused, never answered.
        self.secure = secure
        # Rounds this site revealed shares for: it never contributes to one again, or the
        # aggregator could unmask two sums of the same round over different survivors.
        self.revealed: set[int] = set()
        # Under secure aggregation or differential privacy no training figure of this site
        # (loss, timing, clip counts) leaves it: they are computed without the noise.
        self.private = private or secure is not None
        # Secure aggregation: the session of the round this site has keys in, the next
        # round's (advertised with the masked update), and the update's tensor sizes, known
        # after the first training, so a mask can be made before the update exists.
        self.session: SiteSession | None = None
        self.upcoming: SiteSession | None = None
        self.update_sizes: list[int] = []

    def run(self) -> pb.Finished:
        """Serve tasks until the aggregator says the job is over. Raises JobFailed when the
        aggregator stays away for ``give_up_after`` seconds or refuses this site."""
        delays = self.backoff.delays()
        away_since: float | None = None
        while True:
            try:
                events = self.link.subscribe(
                    pb.JoinRequest(job=self.job, site=self.site, protocol_version=PROTOCOL_VERSION)
                )
                for event in events:
                    away_since, delays = None, self.backoff.delays()
                    if event.HasField("finished"):
                        finished: pb.Finished = event.finished
                        return finished
                    self._handle(event.task)
                # The stream ended without a final word: the aggregator went away.
            except UpdateRefused as e:
                raise JobFailed(
                    f"site {self.site}: the aggregator at {self.endpoint} refused this site: {e}"
                ) from None
            except AggregatorUnavailable as e:
                log.info("aggregator unavailable (%s); reconnecting", e)
            now = time.monotonic()
            away_since = away_since or now
            if now - away_since > self.backoff.give_up_after:
                raise JobFailed(
                    f"site {self.site}: no aggregator at {self.endpoint} for "
                    f"{self.backoff.give_up_after:g} s; giving up"
                )
            time.sleep(next(delays))

    def close(self) -> None:
        self.link.close()

    @property
    def trainer(self) -> LocalTrainer:
        assert self._trainer is not None, "the trainer is made before the first training task"
        return self._trainer

    def _prepare(self, task: pb.Task) -> None:
        """Make the trainer with the preprocessing the task carries (round 0's agreement), or
        the manifest's own when the job has no round 0."""
        if self._trainer is not None or self.source is None:
            return
        agreed = (
            Preprocessing.model_validate_json(task.preprocessing) if task.preprocessing else None
        )
        self._trainer = self.source.trainer(agreed)
        log.info("data prepared: %d training rows", self._trainer.num_train)

    def _rows(self) -> int:
        """The rows behind this site's answers, before the trainer exists too."""
        if self._trainer is not None:
            return self._trainer.num_train
        assert self.source is not None
        return int(self.source.rows)

    # -- one task ----------------------------------------------------------------------------

    def _handle(self, task: pb.Task) -> None:
        refusal = self._refusal(task)
        if refusal is not None:
            log.error("round %d: task refused: %s", task.ref.round, refusal)
            return
        if task.ref.round != STATISTICS_ROUND:
            self._prepare(task)
        if task.stage in (pb.SCHEMA, pb.STATISTICS):
            self._statistics_stage(task)
            return
        if task.HasField("secure"):
            self._secure_stage(task)
            return
        trained = self._train(task)
        if trained is None:
            return
        version, update, metrics = trained
        wire = self.uplink.encode(update) if self.uplink else update
        received = self._send(
            task,
            "update",
            self.link.submit_update,
            self._update_parts(task, version, wire, metrics),
        )
        if received is not None and self.uplink is not None:
            self.uplink.sent(task.ref.round)
        if received is not None:
            log.info(
                "round %d: update sent (%d bytes, loss %.4f)",
                task.ref.round,
                received,
                metrics.get("train_loss", float("nan")),
            )

    def _train(self, task: pb.Task) -> tuple[int, Params, dict[str, float]] | None:
        """Fetch the model, evaluate it if asked, and train it if the task trains."""
        version, tensors = self.fetch_model(task.ref.round)
        params, extras = self.trainer.split(tensors)
        if task.evaluate:
            scores = self.trainer.evaluate(params, final=task.stage == pb.EVALUATE)
            if task.HasField("secure"):
                # The counts ride masked with the update (``_send_masked_update``).
                self.score_counts = scores.counts
                self._keep(task, scores.metrics)
            else:
                self._report(task, version, scores)
        if task.stage not in (pb.TRAIN, pb.MASKED_UPDATE):
            return None
        update, metrics = self.trainer.train(params, task.ref.round, dict(task.config), extras)
        return version, update, metrics

    def _secure_stage(self, task: pb.Task) -> None:
        if task.stage == pb.ADVERTISE_KEYS:
            self.session, self.upcoming = (
                self._new_session(task, task.ref.round, task.ref.attempt),
                None,
            )
            advertisement = self.session.advertisement(task.model_version, self._rows())
            self._send(task, "keys", self.link.advertise_keys, advertisement)
            return
        session = self.session
        if session is None or not session_matches(session, task):
            # This process has no keys in the round (it restarted, or refused a roster).
            log.info(
                "round %d: no keys for %s here; waiting for the next round",
                task.ref.round,
                pb.Stage.Name(task.stage),
            )
            return
        try:
            if task.stage == pb.SHARE_KEYS:
                shares = session.share_keys(task.secure.roster)
                self._send(task, "key shares", self.link.share_keys, shares)
                self._prepare_mask(session)
            elif task.stage == pb.MASKED_UPDATE:
                self._send_masked_update(task, session)
            elif task.stage == pb.CONSISTENCY:
                signed = session.sign_survivors(task.secure.survivors)
                self._send(task, "survivors' signature", self.link.sign_survivors, signed)
            elif task.stage == pb.UNMASK:
                self._reveal(task, session)
        except SecureAggregationError as e:
            # The relayed messages break the protocol: answering could unmask this site.
            self.session = self.upcoming = None
            log.error("round %d: secure aggregation stopped at this site: %s", task.ref.round, e)

    def _statistics_stage(self, task: pb.Task) -> None:
        """Round 0 in the clear: the schema (always: names and types, no values), or, in a
        job without secure aggregation, the counts and sums."""
        if self.source is None:
            log.warning("round 0: this site was started with its data prepared; no answer")
            return
        secure = self.secure is not None
        header = pb.UpdateHeader(
            ref=self._ref(task),
            model_version=task.model_version,
            num_samples=self.source.rows,
            codec=pb.RAW,
        )
        tensors: Params = {}
        if task.stage == pb.SCHEMA:
            header.schema.CopyFrom(self.source.schema(secure))
        else:
            tensors = self.source.statistics(secure)
            header.tensors.extend(to_spec(i) for i in specs_of(tensors))
        parts: list[pb.UpdatePart] = [
            pb.UpdatePart(header=header),
            *iter_parts(pb.UpdatePart, list(tensors.values())),
        ]
        what = pb.Stage.Name(task.stage).lower()
        if self._send(task, what, self.link.submit_update, iter(parts)) is not None:
            log.info("round 0: %s sent", what)

    def _refusal(self, task: pb.Task) -> str | None:
        """Why this task must not be answered, judged from this site's own manifest."""
        if task.stage in (pb.EVALUATE, pb.SCHEMA):
            return None  # no update: a score, or column names and types
        if self.secure is None:
            return (
                "a secure-aggregation task for a job without it"
                if task.HasField("secure")
                else None
            )
        if not task.HasField("secure"):
            return (
                "a plain task for a job with secure aggregation: the update would go in the clear"
            )
        if task.secure.params != self.secure:
            got, want = task.secure.params, self.secure
            differ = [
                f.name
                for f in want.DESCRIPTOR.fields
                if getattr(got, f.name) != getattr(want, f.name)
            ]
            return (
                f"the task's secure-aggregation parameters differ from this site's manifest in "
                f"{', '.join(differ)}; the site answers only what its own manifest agreed"
            )
        if task.ref.round in self.revealed and task.stage in (pb.ADVERTISE_KEYS, pb.MASKED_UPDATE):
            return f"this site already revealed its shares for round {task.ref.round}"
        return None

    def _new_session(self, task: pb.Task, round: int, attempt: int) -> SiteSession:
        return SiteSession(
            self.job,
            self.site,
            round,
            attempt,
            task.secure.params,
            identity=self.identity,
            job_sites=self.job_sites,
        )

    def _prepare_mask(self, session: SiteSession) -> None:
        # The mask does not depend on the update: made while the other sites work.
        if self.update_sizes:
            session.prepare_mask(self.update_sizes)

    def _send_masked_update(self, task: pb.Task, session: SiteSession) -> None:
        session.receive_shares(task.secure.inbox)  # a bad share stops the site before it trains
        if task.ref.round == STATISTICS_ROUND:
            assert self.source is not None
            version, metrics = task.model_version, dict[str, float]()
            counts = self.source.statistics(secure=True)
            masked = dict(zip(counts, session.masked_counts(list(counts.values())), strict=True))
        elif task.secure.scores_only:
            # The final evaluation: this site's counts, masked; nothing is trained.
            version, tensors = self.fetch_model(task.ref.round)
            scores = self.trainer.evaluate(self.trainer.split(tensors)[0], final=True)
            self._keep(task, scores.metrics)
            ready = to_masked(noised(scores.counts, self.score_noise or 0.0))
            masked, metrics = {SCORE_COUNTS: session.masked_counts([ready])[0]}, {}
        else:
            self.score_counts = None
            trained = self._train(task)
            assert trained is not None  # MASKED_UPDATE trains
            version, update, metrics = trained
            tensors = dict(update)
            if task.evaluate and self.score_counts is not None:
                counted = to_masked(noised(self.score_counts, self.score_noise or 0.0))
                tensors[SCORE_COUNTS] = counted
            exact = [tensors[SCORE_COUNTS]] if SCORE_COUNTS in tensors else []
            self.update_sizes = [v.size for v in tensors.values()]
            masked = dict(
                zip(tensors, session.masked_update(list(update.values()), exact), strict=True)
            )
        # The next round's keys ride along, so its roster is known before this round ends
        # (round 0 makes no model: round 1 trains the same version).
        upcoming = self._new_session(task, task.ref.round + 1, 1)
        next_version = task.model_version + min(task.ref.round, 1)
        keys = upcoming.advertisement(next_version, self._rows())
        parts = self._update_parts(task, version, masked, metrics, next_round_keys=keys)
        if self._send(task, "masked update", self.link.submit_update, parts) is not None:
            self.upcoming = upcoming
            log.info("round %d: masked update sent", task.ref.round)

    def _reveal(self, task: pb.Task, session: SiteSession) -> None:
        secure = task.secure
        reveal = session.reveal(secure.survivors, secure.dropped, secure.consistency)
        self.revealed.add(task.ref.round)
        self.session = None
        upcoming, self.upcoming = self.upcoming, None
        if upcoming is not None and secure.next_roster:
            try:
                reveal.next_round_shares.CopyFrom(upcoming.share_keys(secure.next_roster))
                self.session = upcoming
            except SecureAggregationError as e:
                # Only the next round's exchange is refused; this round's reveal still goes.
                log.error("round %d: next round's roster refused: %s", task.ref.round + 1, e)
        self._send(task, "shares", self.link.reveal_shares, reveal)
        if self.session is not None:
            self._prepare_mask(self.session)

    def _send(self, task: pb.Task, what: str, call: Callable[[M], R], request: M) -> R | None:
        """Make one call; a refusal (round closed, duplicate...) is final for this message,
        not for the site, so it is logged and None returned. Transient errors propagate."""
        try:
            return call(request)
        except UpdateRefused as e:
            log.warning("round %d: %s refused: %s", task.ref.round, what, e)
            return None

    def fetch_model(self, round: int) -> tuple[int, Params]:
        """The global model and the strategy's tensors. Under a downlink codec the site
        asks for the change since the model it holds and adds it (``codec.downlink``)."""
        ref = pb.RoundRef(job=self.job, round=round, site=self.site)
        down = self.downlink
        parts = self.link.get_model(down.request(ref) if down else pb.ModelRequest(ref=ref))
        header = next(parts).header
        infos = [from_spec(s) for s in header.tensors]
        tensors = assemble(infos, (p.chunk for p in parts))
        if header.codec == pb.RAW:
            if down is not None:
                down.keep(header.model_version, self.trainer.split(tensors)[0])
            return header.model_version, tensors
        if down is None:
            raise JobFailed(
                f"site {self.site}: the aggregator sent a model in codec "
                f"{pb.Codec.Name(header.codec)}, which this site's manifest does not use"
            )
        return header.model_version, down.apply(header, tensors)

    def _ref(self, task: pb.Task) -> pb.RoundRef:
        """How this site's answer to ``task`` names its round."""
        r = task.ref
        return pb.RoundRef(job=self.job, round=r.round, attempt=r.attempt, site=self.site)

    def _report(self, task: pb.Task, version: int, scores: Scores) -> None:
        """The evaluation as this job allows: the site's figures in a plain job; in a private
        one its counts with noise (``evaluation.noiseMultiplier``), or word that it keeps
        them. Its record-level epsilon follows from the manifest and its rows, so it goes."""
        evaluation = pb.Evaluation(ref=self._ref(task), model_version=version)
        if not self.private:
            evaluation.num_samples = self.trainer.held_out_size()
            evaluation.metrics.update(scores.metrics)
        else:
            self._keep(task, scores.metrics)
            if "epsilon" in scores.metrics:
                evaluation.metrics["epsilon"] = scores.metrics["epsilon"]
            if self.score_noise is not None:
                evaluation.counts.extend(int(c) for c in noised(scores.counts, self.score_noise))
            else:
                evaluation.withheld = True
        self._send(task, "evaluation", self.link.report_evaluation, evaluation)

    def _keep(self, task: pb.Task, metrics: dict[str, float]) -> None:
        """A private job's own figures stay here: in this site's log, for its admin."""
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        log.info("round %d: held-out scores, kept at this site: %s", task.ref.round, shown)

    def _update_parts(
        self,
        task: pb.Task,
        version: int,
        update: Params,
        metrics: dict[str, float],
        next_round_keys: pb.KeyAdvertisement | None = None,
    ) -> Iterator[pb.UpdatePart]:
        masked = task.HasField("secure")
        yield pb.UpdatePart(
            header=pb.UpdateHeader(
                ref=self._ref(task),
                model_version=version,
                # Under secure aggregation the weight is folded into the masked values.
                num_samples=0 if masked else self.trainer.num_train,
                metrics={} if self.private else metrics,
                tensors=[to_spec(i) for i in specs_of(update)],
                codec=pb.MASKED_FIXED_POINT
                if masked
                else self.uplink.codec.wire
                if self.uplink
                else pb.RAW,
                next_round_keys=next_round_keys,
            )
        )
        yield from iter_parts(pb.UpdatePart, list(update.values()))
