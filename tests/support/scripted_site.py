"""A site that speaks the real protocol over real gRPC from the test process, and stops where
the test says: the way to drop a site at an exact step of secure aggregation, which a killed
process cannot be timed to do."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import numpy as np
from fedkube.proto import PROTOCOL_VERSION
from fedkube.proto import fedkube_pb2 as pb
from fedkube.proto import fedkube_pb2_grpc as pb_grpc
from fedkube.secagg.site import SiteSession
from fedkube.stats.score_counts import LOSS_FRACTION_BITS, SCORE_COUNTS, ScoreLayout, to_masked
from fedkube.wire.tensors import assemble, from_spec, iter_chunks, specs_of, to_spec


class ScriptedSite:
    """Takes part in secure rounds with a given update until ``drop_after`` (a Stage it
    answers last; None: to the end), then closes its connection without a word. The shares
    it seals for the sites in ``bad_shares_for`` are altered, so they do not open there."""

    def __init__(
        self,
        endpoint: str,
        job: str,
        site: str,
        samples: int,
        drop_after: pb.Stage | None,
        bad_shares_for: frozenset[str] = frozenset(),
    ) -> None:
        self.job, self.site, self.samples, self.drop_after = job, site, samples, drop_after
        self.bad_shares_for = bad_shares_for
        self.channel = grpc.insecure_channel(endpoint)
        self.stub = pb_grpc.AggregatorStub(self.channel)
        self.answered: list[pb.Stage] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ScriptedSite:
        self.thread.start()
        return self

    def _run(self) -> None:
        session: SiteSession | None = None
        events = self.stub.Subscribe(
            pb.JoinRequest(job=self.job, site=self.site, protocol_version=PROTOCOL_VERSION)
        )
        try:
            for event in events:
                if event.HasField("finished"):
                    return
                task = event.task
                if task.stage == pb.ADVERTISE_KEYS:
                    session = SiteSession(
                        self.job, self.site, task.ref.round, task.ref.attempt, task.secure.params
                    )
                    self.stub.AdvertiseKeys(session.advertisement(task.model_version, self.samples))
                elif session is not None and task.stage == pb.SHARE_KEYS:
                    shares = session.share_keys(task.secure.roster)
                    for share in shares.shares:
                        if share.recipient in self.bad_shares_for:
                            share.ciphertext = (
                                bytes([share.ciphertext[0] ^ 1]) + share.ciphertext[1:]
                            )
                    self.stub.ShareKeys(shares)
                elif session is not None and task.stage == pb.MASKED_UPDATE:
                    session.receive_shares(task.secure.inbox)
                    version, model = self._model(task)
                    # A small, known update: every value 0.01; and, when the round scores
                    # the model, known counts: 10 held-out rows, 9 right.
                    update = {k: np.full_like(v, 0.01) for k, v in model.items()}
                    if task.secure.scores_only:
                        update = {}
                    counts = [to_masked(self.counts())] if task.evaluate else []
                    names = [*update, *([SCORE_COUNTS] if counts else [])]
                    masked = dict(
                        zip(
                            names,
                            session.masked_update(list(update.values()), counts),
                            strict=True,
                        )
                    )
                    self.stub.SubmitUpdate(self._parts(task, version, masked))
                elif session is not None and task.stage == pb.UNMASK:
                    self.stub.RevealShares(
                        session.reveal(task.secure.survivors, task.secure.dropped)
                    )
                self.answered.append(task.stage)
                if task.stage == self.drop_after:
                    return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e
        except BaseException as e:
            self.error = e
        finally:
            self.channel.close()  # the drop: the aggregator sees the stream end

    @staticmethod
    def counts() -> np.ndarray:
        counts = ScoreLayout(personal=False).empty()
        counts[:3] = [10, 9, 10 << LOSS_FRACTION_BITS]  # mean loss 1.0
        return counts

    def _model(self, task: pb.Task) -> tuple[int, dict[str, np.ndarray]]:
        parts = self.stub.GetModel(
            pb.ModelRequest(ref=pb.RoundRef(job=self.job, round=task.ref.round, site=self.site))
        )
        header = next(parts).header
        model = assemble([from_spec(s) for s in header.tensors], (p.chunk for p in parts))
        return header.model_version, model

    def _parts(self, task: pb.Task, version: int, masked: dict) -> Iterator[pb.UpdatePart]:
        yield pb.UpdatePart(
            header=pb.UpdateHeader(
                ref=pb.RoundRef(
                    job=self.job,
                    round=task.ref.round,
                    attempt=task.ref.attempt,
                    site=self.site,
                ),
                model_version=version,
                tensors=[to_spec(i) for i in specs_of(masked)],
                codec=pb.MASKED_FIXED_POINT,
            )
        )
        for chunk in iter_chunks(list(masked.values())):
            yield pb.UpdatePart(chunk=chunk)
