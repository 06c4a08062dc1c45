"""What left the site, in its audit trail: every message a trainer sends the aggregator that
carries anything of its data (updates and round 0's answers, evaluations, revealed shares),
with the epsilon its ledger had spent by then. A link that wraps the transport's."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from fedkube.proto import fedkube_pb2 as pb
from fedkube.storage.audit_trail import AuditTrail
from fedkube.transport.link import SiteLink, UpdateMessage
from fedkube.wire.chunk_frames import ChunkPart


class AuditedLink(SiteLink):
    def __init__(
        self,
        inner: SiteLink,
        trail: AuditTrail,
        epsilon: Callable[[], float | None],
        rounds: int,
    ) -> None:
        self.inner = inner
        # Past the last round, a masked message is the final evaluation's counts only.
        self.rounds = rounds
        self.trail = trail
        self.epsilon = epsilon
        self.endpoint = inner.endpoint

    def subscribe(self, request: pb.JoinRequest) -> Iterator[pb.Event]:
        return self.inner.subscribe(request)

    def get_model(self, request: pb.ModelRequest) -> Iterator[pb.ModelPart | ChunkPart]:
        return self.inner.get_model(request)

    def submit_update(self, parts: Iterable[UpdateMessage]) -> int:
        seen: list[pb.UpdateHeader] = []

        def watched() -> Iterator[UpdateMessage]:
            for part in parts:
                if not seen and isinstance(part, pb.UpdatePart) and part.HasField("header"):
                    seen.append(part.header)
                yield part

        taken = self.inner.submit_update(watched())
        if seen:
            h = seen[0]
            what = (
                "schema"
                if h.HasField("schema")
                else "statistics"
                if h.ref.round == 0
                else "masked evaluation counts"
                if h.codec == pb.MASKED_FIXED_POINT and h.ref.round > self.rounds
                else "masked update"
                if h.codec == pb.MASKED_FIXED_POINT
                else "update"
            )
            self._sent(what, h.ref, model_version=h.model_version, bytes=taken)
        return taken

    def report_evaluation(self, message: pb.Evaluation) -> None:
        self.inner.report_evaluation(message)
        released = (
            "withheld" if message.withheld else "noised counts" if message.counts else "figures"
        )
        self._sent(
            "evaluation", message.ref, model_version=message.model_version, released=released
        )

    def advertise_keys(self, message: pb.KeyAdvertisement) -> None:
        self.inner.advertise_keys(message)

    def share_keys(self, message: pb.KeyShares) -> None:
        self.inner.share_keys(message)

    def reveal_shares(self, message: pb.Reveal) -> None:
        self.inner.reveal_shares(message)
        self._sent("shares revealed", message.ref)

    def sign_survivors(self, message: pb.Consistency) -> None:
        self.inner.sign_survivors(message)

    def decline_task(self, message: pb.Decline) -> None:
        self.inner.decline_task(message)  # carries no data: the site's reason only

    def progress(self, job: str, site: str) -> bytes | None:
        return self.inner.progress(job, site)

    def close(self) -> None:
        self.inner.close()

    def _sent(self, what: str, ref: pb.RoundRef, **fields: object) -> None:
        self.trail.append(
            "sent",
            message=what,
            job=ref.job,
            site=ref.site,
            round=ref.round,
            attempt=ref.attempt,
            epsilon=self.epsilon(),
            **fields,
        )
