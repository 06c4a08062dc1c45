"""What the aggregator's helpers may use of the round engine, as a narrow interface.

The helpers (``secure_rounds``, ``statistics_round``, ``evaluations``, ``reception``,
``persistence``) each name, in a Protocol of their own built on ``RoundHost``, the part of
the engine they drive; the Coordinator has those members and is passed in. So no helper
imports the coordinator, and each one's dependencies are read from its own file.
"""

from __future__ import annotations

from typing import Protocol

from fedkube.aggregator.rounds import OpenRound, SiteState
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.job import FederatedJob, JobSpec


class RoundHost(Protocol):
    """The job, its sites and the open round; the calls that move a round on."""

    job: FederatedJob
    spec: JobSpec
    quorum: int
    sites: dict[str, SiteState]
    open: OpenRound | None

    def known(self, job: str, site: str) -> SiteState: ...

    def notify(self) -> None: ...

    def open_round(
        self, number: int, stage: pb.Stage, version: int, attempt: int = 1
    ) -> OpenRound: ...

    def next_stage(self, r: OpenRound, stage: pb.Stage, participants: set[str]) -> None: ...

    async def stage_answered(self, r: OpenRound, needed: int) -> bool: ...

    def abandon_round(self) -> None: ...
