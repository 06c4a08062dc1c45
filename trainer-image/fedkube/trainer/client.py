"""`fedkube trainer`: one site's long-lived process. It dials out to the aggregator, holds one
Subscribe stream open, and acts on each task the moment it arrives: fetch the model, evaluate
it, train, send the update. When the aggregator is away it reconnects with backoff."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedkube.errors import JobFailed
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
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
        version, tensors = self.fetch_model(task.round)
        params, extras = self.trainer.split(tensors)
        if task.evaluate:
            metrics = self.trainer.evaluate(params, final=task.stage == pb.EVALUATE)
            self._report(task, version, metrics)
        if task.stage != pb.TRAIN:
            return
        update, metrics = self.trainer.train(params, task.round, dict(task.config), extras)
        try:
            receipt = self.stub.SubmitUpdate(self._update_parts(task, version, update, metrics))
            log.info(
                "round %d: update sent (%d bytes, loss %.4f)",
                task.round,
                receipt.bytes_received,
                metrics.get("train_loss", float("nan")),
            )
        except grpc.RpcError as e:
            if e.code() in _TRANSIENT:
                raise
            # A refusal (round closed, duplicate...) is final for this update, not for the site.
            log.warning("round %d: update refused: %s", task.round, e.details())

    def fetch_model(self, round: int) -> tuple[int, Params]:
        parts = self.stub.GetModel(pb.ModelRequest(job=self.job, site=self.site, round=round))
        first = next(parts)
        header = first.header
        infos = [from_spec(s) for s in header.tensors]
        params = assemble(infos, (p.chunk for p in parts))
        return header.model_version, params

    def _report(self, task: pb.Task, version: int, metrics: dict[str, float]) -> None:
        try:
            self.stub.ReportEvaluation(
                pb.Evaluation(
                    job=self.job,
                    round=task.round,
                    site=self.site,
                    model_version=version,
                    num_samples=self.trainer.held_out_size(),
                    metrics=metrics,
                )
            )
        except grpc.RpcError as e:
            if e.code() in _TRANSIENT:
                raise
            log.warning("round %d: evaluation refused: %s", task.round, e.details())

    def _update_parts(
        self, task: pb.Task, version: int, update: Params, metrics: dict[str, float]
    ) -> Iterator[pb.UpdatePart]:
        yield pb.UpdatePart(
            header=pb.UpdateHeader(
                job=self.job,
                round=task.round,
                site=self.site,
                model_version=version,
                num_samples=self.trainer.num_train,
                metrics=metrics,
                tensors=[to_spec(i) for i in specs_of(update)],
                codec="raw",
            )
        )
        for chunk in iter_chunks(list(update.values())):
            yield pb.UpdatePart(chunk=chunk)
