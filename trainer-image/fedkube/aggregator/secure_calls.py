"""The secure-aggregation calls a site makes, passed to the job's ``SecureRounds``; refused
with what is wrong when the job does not aggregate securely."""

from __future__ import annotations

from fedkube.aggregator.secure_rounds import SecureRounds
from fedkube.errors import RoundClosed
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.job import FederatedJob


class SecureCalls:
    """The coordinator's part that relays them (a base class: it holds no state of its own)."""

    job: FederatedJob
    secure: SecureRounds | None

    def advertise_keys(self, msg: pb.KeyAdvertisement) -> None:
        self._secure_rounds(msg.ref).advertise_keys(msg)

    def share_keys(self, msg: pb.KeyShares) -> None:
        self._secure_rounds(msg.ref).share_keys(msg)

    def reveal_shares(self, msg: pb.Reveal) -> None:
        self._secure_rounds(msg.ref).reveal_shares(msg)

    def sign_survivors(self, msg: pb.Consistency) -> None:
        self._secure_rounds(msg.ref).sign_survivors(msg)

    def _secure_rounds(self, ref: pb.RoundRef) -> SecureRounds:
        if self.secure is None:
            raise RoundClosed(
                f"job {self.job.name!r} does not use secure aggregation",
                site=ref.site,
                round=ref.round,
            )
        return self.secure
