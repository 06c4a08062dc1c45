"""`fedkube trainer`: one site's long-lived process. It dials out to the aggregator, holds one
Subscribe stream open, and acts on each task the moment it arrives: fetch the model, evaluate
it, train, send the update. When the aggregator is away it reconnects with backoff.

Under secure aggregation the trained update stays here while the round's later stages arrive
(``fedkube.secagg.site``); only its masked form is ever sent."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from fedkube.errors import JobFailed, SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.secagg.site import SiteSession
from fedkube.security.tls import channel_credentials
from fedkube.trainer.local import LocalTrainer
from fedkube.wire.tensors import Params, assemble, from_spec, iter_chunks, specs_of, to_spec

log = logging.getLogger("fedkube.trainer")

PROTOCOL_VERSION = 1
# Statuses that mean "the aggregator is not there right now": reconnect.
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


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


@dataclass
class PendingSecureRound:
    """A round's keys, and once trained its update, waiting for secure aggregation's later
    stages (the update is empty until this site has trained for the round)."""

    session: SiteSession
    version: int = 0
    update: Params = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def matches(self, task: pb.Task) -> bool:
        return (self.session.context.round, self.session.context.attempt) == (
            task.round,
            task.attempt,
        )


class TrainerClient:
    def __init__(
        self,
        job: str,
        site: str,
        endpoint: str,
        trainer: LocalTrainer,
        backoff: Backoff = Backoff(),
        tls_dir: Path | None = None,
    ) -> None:
        self.job = job
        self.site = site
        self.endpoint = endpoint
        self.trainer = trainer
        self.backoff = backoff
        self.channel = (
            grpc.secure_channel(endpoint, channel_credentials(tls_dir))
            if tls_dir is not None
            else grpc.insecure_channel(endpoint)
        )
        self.stub = pb_grpc.AggregatorStub(self.channel)
        self.pending: PendingSecureRound | None = None

    def run(self) -> pb.Finished:
        """Serve tasks until the aggregator says the job is over. Raises JobFailed when the
        aggregator stays away for ``give_up_after`` seconds or refuses this site."""
        delays = self.backoff.delays()
        away_since: float | None = None
        while True:
            try:
                events = self.stub.Subscribe(
                    pb.JoinRequest(job=self.job, site=self.site, protocol_version=PROTOCOL_VERSION)
                )
                for event in events:
                    away_since, delays = None, self.backoff.delays()
                    if event.HasField("finished"):
                        finished: pb.Finished = event.finished
                        return finished
                    self._handle(event.task)
                # The stream ended without a final word: the aggregator went away.
            except grpc.RpcError as e:
                code = e.code()
                if code not in _TRANSIENT:
                    raise JobFailed(
                        f"site {self.site}: the aggregator at {self.endpoint} refused this site: "
                        f"{e.details()}"
                    ) from None
                log.info("aggregator unavailable (%s); reconnecting", code.name)
            now = time.monotonic()
            away_since = away_since or now
            if now - away_since > self.backoff.give_up_after:
                raise JobFailed(
                    f"site {self.site}: no aggregator at {self.endpoint} for "
                    f"{self.backoff.give_up_after:g} s; giving up"
                )
            time.sleep(next(delays))

    def close(self) -> None:
        self.channel.close()

    # -- one task ----------------------------------------------------------------------------

    def _handle(self, task: pb.Task) -> None:
        if task.stage in (pb.SHARE_KEYS, pb.MASKED_UPDATE, pb.UNMASK):
            self._secure_stage(task)
            return
        trained = self._train(task)
        if trained is None:
            return
        version, update, metrics = trained
        if task.HasField("secure"):
            # Keep the update; advertise this round's keys instead of sending it.
            session = SiteSession(self.job, self.site, task.round, task.attempt, task.secure.params)
            self.pending = PendingSecureRound(session, version, update, metrics)
            self._send(
                task,
                "keys",
                self.stub.AdvertiseKeys,
                session.advertisement(version, self.trainer.num_train),
            )
            return
        receipt = self._send(
            task,
            "update",
            self.stub.SubmitUpdate,
            self._update_parts(task, version, update, metrics),
        )
        if receipt is not None:
            log.info(
                "round %d: update sent (%d bytes, loss %.4f)",
                task.round,
                receipt.bytes_received,
                metrics.get("train_loss", float("nan")),
            )

    def _train(self, task: pb.Task) -> tuple[int, Params, dict[str, float]] | None:
        """Fetch the model, evaluate it if asked, and train it if the task trains."""
        version, tensors = self.fetch_model(task.round)
        params, extras = self.trainer.split(tensors)
        if task.evaluate:
            metrics = self.trainer.evaluate(params, final=task.stage == pb.EVALUATE)
            self._report(task, version, metrics)
        if task.stage not in (pb.TRAIN, pb.SHARE_KEYS):
            return None
        update, metrics = self.trainer.train(params, task.round, dict(task.config), extras)
        return version, update, metrics

    def _secure_stage(self, task: pb.Task) -> None:
        pending = self.pending
        if pending is None or not pending.matches(task):
            # This process did not advertise keys for the round (it restarted): sit it out.
            log.info(
                "round %d: no keys for %s here; waiting for the next round",
                task.round,
                pb.Stage.Name(task.stage),
            )
            return
        session, secure = pending.session, task.secure
        try:
            if task.stage == pb.SHARE_KEYS:
                shares = session.share_keys(secure.roster)
                self._send(task, "key shares", self.stub.ShareKeys, shares)
                if not pending.update:
                    # The round opened with the keys sent at the last reveal: the shares are
                    # out, and the exchange among the others runs while this site trains.
                    trained = self._train(task)
                    if trained is None:
                        return
                    pending.version, pending.update, pending.metrics = trained
                # The mask does not depend on the update: make it while the others work.
                session.prepare_mask([v.size for v in pending.update.values()])
            elif task.stage == pb.MASKED_UPDATE:
                if not pending.update:
                    log.warning("round %d: no trained update to mask; sitting out", task.round)
                    return
                session.receive_shares(secure.inbox)
                masked = session.masked_update(list(pending.update.values()))
                update = dict(zip(pending.update, masked, strict=True))
                pending.update = {}
                metrics = {**pending.metrics, "secagg_clipped_values": session.clipped_values}
                parts = self._update_parts(task, pending.version, update, metrics, masked=True)
                if self._send(task, "masked update", self.stub.SubmitUpdate, parts) is not None:
                    log.info("round %d: masked update sent", task.round)
            else:
                reveal = session.reveal(secure.survivors, secure.dropped)
                # Fresh keys for the next round travel with the reveal, so it can open with
                # its roster closed. They are only ever used for that round's first attempt.
                upcoming = SiteSession(self.job, self.site, task.round + 1, 1, secure.params)
                reveal.next_round_keys.CopyFrom(
                    upcoming.advertisement(task.round, self.trainer.num_train)
                )
                self.pending = PendingSecureRound(upcoming)
                self._send(task, "shares", self.stub.RevealShares, reveal)
        except SecureAggregationError as e:
            # The relayed messages break the protocol: answering could unmask this site.
            self.pending = None
            log.error("round %d: secure aggregation stopped at this site: %s", task.round, e)

    def _send(self, task: pb.Task, what: str, call: Callable[[Any], Any], request: Any) -> Any:
        """Make one call; a refusal (round closed, duplicate...) is final for this message,
        not for the site, so it is logged and None returned. Transient errors propagate."""
        try:
            return call(request)
        except grpc.RpcError as e:
            if e.code() in _TRANSIENT:
                raise
            log.warning("round %d: %s refused: %s", task.round, what, e.details())
            return None

    def fetch_model(self, round: int) -> tuple[int, Params]:
        parts = self.stub.GetModel(pb.ModelRequest(job=self.job, site=self.site, round=round))
        first = next(parts)
        header = first.header
        infos = [from_spec(s) for s in header.tensors]
        params = assemble(infos, (p.chunk for p in parts))
        return header.model_version, params

    def _report(self, task: pb.Task, version: int, metrics: dict[str, float]) -> None:
        evaluation = pb.Evaluation(
            job=self.job,
            round=task.round,
            site=self.site,
            model_version=version,
            num_samples=self.trainer.held_out_size(),
            metrics=metrics,
        )
        self._send(task, "evaluation", self.stub.ReportEvaluation, evaluation)

    def _update_parts(
        self,
        task: pb.Task,
        version: int,
        update: Params,
        metrics: dict[str, float],
        masked: bool = False,
    ) -> Iterator[pb.UpdatePart]:
        yield pb.UpdatePart(
            header=pb.UpdateHeader(
                job=self.job,
                round=task.round,
                site=self.site,
                model_version=version,
                # Under secure aggregation the weight is folded into the masked values.
                num_samples=0 if masked else self.trainer.num_train,
                metrics=metrics,
                tensors=[to_spec(i) for i in specs_of(update)],
                codec="secagg" if masked else "raw",
            )
        )
        for chunk in iter_chunks(list(update.values())):
            yield pb.UpdatePart(chunk=chunk)
