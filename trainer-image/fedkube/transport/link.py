"""The site's side of the wire protocol, as one interface a transport implements.

Each method is one call of the ``Aggregator`` service (``fedkube.proto``), with the same
messages. A transport raises ``UpdateRefused`` when the aggregator refused the message (final
for that message) and ``AggregatorUnavailable`` when it could not be reached (reconnect).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.chunk_frames import ChunkPart

# What an update stream carries: its header as a message, then its chunks as messages or as
# frames already encoded (``fedkube.wire.chunk_frames``: the same bytes, built with one copy
# where a message takes three).
UpdateMessage = pb.UpdatePart | bytes


class SiteLink(ABC):
    """One site's connection to the aggregator of one job."""

    #: Where the aggregator is, for messages ("127.0.0.1:7070", "in-process").
    endpoint: str

    @abstractmethod
    def subscribe(self, request: pb.JoinRequest) -> Iterator[pb.Event]:
        """The stream of tasks and the final word, held open for the whole job."""

    @abstractmethod
    def get_model(self, request: pb.ModelRequest) -> Iterator[pb.ModelPart | ChunkPart]:
        """The global model: a header (a ``pb.ModelPart``), then its chunks (``pb.ModelPart``
        or, read in place, ``ChunkPart``)."""

    @abstractmethod
    def submit_update(self, parts: Iterable[UpdateMessage]) -> int:
        """One update: a header, then its chunks. Returns the bytes the aggregator took."""

    @abstractmethod
    def report_evaluation(self, message: pb.Evaluation) -> None: ...

    @abstractmethod
    def advertise_keys(self, message: pb.KeyAdvertisement) -> None: ...

    @abstractmethod
    def share_keys(self, message: pb.KeyShares) -> None: ...

    @abstractmethod
    def reveal_shares(self, message: pb.Reveal) -> None: ...

    @abstractmethod
    def sign_survivors(self, message: pb.Consistency) -> None: ...

    @abstractmethod
    def decline_task(self, message: pb.Decline) -> None:
        """Say that this site will not answer a task, and why. An aggregator that does not
        take declines (an earlier release) is not an error: it waits as it always did."""

    def progress(self, job: str, site: str) -> bytes | None:
        """The job's progress JSON, asked for as ``site`` (None where the link serves none)."""
        return None

    def close(self) -> None:
        """Let go of the connection."""
