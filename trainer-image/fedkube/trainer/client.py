"""`fedkube trainer`: one site's long-lived process. It dials out to the aggregator, holds one
Subscribe stream open, and acts on each task the moment it arrives: fetch the model, evaluate
it, train, send the update. When the aggregator is away it reconnects with backoff.

Under secure aggregation (``secure_stages``) a site trains once the round's key shares are
in, and only the masked update leaves it."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fedkube.codec.base import Codec
from fedkube.codec.downlink import HeldModel
from fedkube.codec.error_feedback import UplinkEncoder
from fedkube.errors import AggregatorUnavailable, JobFailed, UpdateRefused
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.signed_keys import SigningIdentity
from fedkube.spec.preprocessing import Preprocessing
from fedkube.stats.score_counts import noised
from fedkube.trainer.guards import SiteGuards
from fedkube.trainer.local import LocalTrainer, Scores
from fedkube.trainer.model_download import read_model
from fedkube.trainer.secure_stages import STATISTICS_ROUND, SecureStages
from fedkube.trainer.stage_types import SiteSource, Trained
from fedkube.transport.link import SiteLink, UpdateMessage
from fedkube.wire.digest import model_digest
from fedkube.wire.tensors import Params, chunk_frames, iter_parts, specs_of, to_spec

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
        job_sites: Mapping[str, int | None] | None = None,
        score_noise: float | None = None,
        guards: SiteGuards | None = None,
    ) -> None:
        self.job = job
        # What this site will not do twice (reveal a round, score a model), across restarts.
        self.guards = guards or SiteGuards()
        # evaluation.noiseMultiplier: this site's counts leave it noised by this much.
        self.score_noise = score_noise
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
        # The digest of the model fetched for the current round (none in round 0).
        self.model_digests: dict[int, bytes] = {}
        # Secure aggregation as this site's own copy of the manifest states it (None: the job
        # has none): its stages, and the checks that refuse a task that says otherwise.
        self.secure = (
            SecureStages(self, secure, identity, job_sites) if secure is not None else None
        )
        # Under secure aggregation or differential privacy no training figure of this site
        # (loss, timing, clip counts) leaves it: they are computed without the noise.
        self.private = private or secure is not None

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

    def rows(self) -> int:
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
            self.decline(task, refusal)
            return
        if task.ref.round != STATISTICS_ROUND:
            self._prepare(task)
        if task.stage in (pb.SCHEMA, pb.STATISTICS):
            self._statistics_stage(task)
            return
        if task.HasField("secure"):
            assert self.secure is not None  # a secure task for a plain job is refused
            self.secure.handle(task)
            return
        trained = self.train_task(task)
        if trained is None:
            return
        version, update, metrics = trained.version, trained.update, trained.metrics
        wire = self.uplink.encode(update) if self.uplink else update
        received = self.send(
            task,
            "update",
            self.link.submit_update,
            self.update_parts(task, version, wire, metrics),
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

    def train_task(self, task: pb.Task) -> Trained | None:
        """Fetch the model, evaluate it if asked, and train it if the task trains."""
        version, tensors = self.fetch_model(task.ref.round)
        params, extras = self.trainer.split(tensors)
        counts = None
        if task.evaluate and self._scored_before(task, params):
            self._withhold(task, version)
        elif task.evaluate:
            scores = self.trainer.evaluate(params, final=task.stage == pb.EVALUATE)
            if task.HasField("secure"):
                # The counts ride masked with the update (``SecureStages``).
                counts = self.released_counts(scores.counts)
                self.keep_scores(task, scores.metrics)
            else:
                self._report(task, version, scores)
        if task.stage not in (pb.TRAIN, pb.MASKED_UPDATE):
            return None
        update, metrics = self.trainer.train(params, task.ref.round, dict(task.config), extras)
        return Trained(version, update, metrics, counts)

    def released_counts(self, counts: np.ndarray) -> np.ndarray:
        """The evaluation counts as they may leave this site: noised when the job says so,
        and then counted in this site's own ledger (one Gaussian release of its held-out
        records), whatever the aggregator counts."""
        if self.score_noise is None:
            return counts
        ledger = self.trainer.ledger
        if ledger is not None:
            ledger.spend_held_out(self.score_noise)
        return noised(counts, self.score_noise)

    def _scored_before(self, task: pb.Task, params: Params) -> bool:
        """Noised scores of one model are released once: asked again (under any round number
        or version), the site withholds them, or the noise could be averaged away. (Masked
        counts ride with each round's update; a scores-only secure round has its own guard.)"""
        if self.score_noise is None or task.HasField("secure"):
            return False
        return not self.guards.first_score(model_digest(params))

    def _withhold(self, task: pb.Task, version: int) -> None:
        log.warning(
            "round %d: asked to score a model this site already scored; it answers once",
            task.ref.round,
        )
        evaluation = pb.Evaluation(ref=self._ref(task), model_version=version, withheld=True)
        self.send(task, "evaluation", self.link.report_evaluation, evaluation)

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
        if self.send(task, what, self.link.submit_update, iter(parts)) is not None:
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
        return self.secure.refusal(task)

    def decline(self, task: pb.Task, reason: str) -> None:
        """Tell the aggregator this site will not answer the task, and why, so that it does
        not wait for the site until the deadline."""
        message = pb.Decline(ref=self._ref(task), stage=task.stage, reason=reason)
        self.send(task, "decline", self.link.decline_task, message)

    def send(self, task: pb.Task, what: str, call: Callable[[M], R], request: M) -> R | None:
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
        first = next(parts, None)
        if not isinstance(first, pb.ModelPart) or not first.HasField("header"):
            raise JobFailed("the aggregator's model stream does not begin with its header")
        header = first.header
        tensors = read_model(header, (p.chunk for p in parts), self.trainer.model_bytes)
        if header.codec != pb.RAW and down is None:
            raise JobFailed(
                f"site {self.site}: the aggregator sent a model in codec "
                f"{pb.Codec.Name(header.codec)}, which this site's manifest does not use"
            )
        if header.codec == pb.RAW and down is not None:
            down.keep(header.model_version, self.trainer.split(tensors)[0])
        elif down is not None:
            tensors = down.apply(header, tensors)
        # What this site trains or scores in the round: its consistency signature says so.
        self.model_digests = {round: bytes.fromhex(model_digest(tensors))}
        return header.model_version, tensors

    def _ref(self, task: pb.Task) -> pb.RoundRef:
        """How this site's answer to ``task`` names its round."""
        r = task.ref
        return pb.RoundRef(job=self.job, round=r.round, attempt=r.attempt, site=self.site)

    def _report(self, task: pb.Task, version: int, scores: Scores) -> None:
        """The evaluation as this job allows: the site's figures in a plain job; in a private
        one its counts with noise (``evaluation.noiseMultiplier``), or word that it keeps
        them. Its record-level epsilon follows from the manifest and its rows, so it goes."""
        evaluation = pb.Evaluation(ref=self._ref(task), model_version=version)
        if not self.private and self.score_noise is None:
            evaluation.num_samples = self.trainer.held_out_size()
            evaluation.metrics.update(scores.metrics)
        else:
            self.keep_scores(task, scores.metrics)
            if "epsilon" in scores.metrics:
                evaluation.metrics["epsilon"] = scores.metrics["epsilon"]
            if self.score_noise is not None:
                evaluation.counts.extend(int(c) for c in self.released_counts(scores.counts))
            else:
                evaluation.withheld = True
        self.send(task, "evaluation", self.link.report_evaluation, evaluation)

    def keep_scores(self, task: pb.Task, metrics: dict[str, float]) -> None:
        """A private job's own figures stay here: in this site's log, for its admin."""
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        log.info("round %d: held-out scores, kept at this site: %s", task.ref.round, shown)

    def update_parts(
        self,
        task: pb.Task,
        version: int,
        update: Params,
        metrics: dict[str, float],
        next_round_keys: pb.KeyAdvertisement | None = None,
        unopened_shares: Sequence[str] = (),
        revealed_for: Sequence[str] = (),
    ) -> Iterator[UpdateMessage]:
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
                unopened_shares=unopened_shares,
                revealed_for=revealed_for,
            )
        )
        # Frames, not messages: one copy of each byte (``wire.chunk_frames``).
        for frame, _ in chunk_frames(list(update.values())):
            yield frame
