"""The in-process transport: a site calls the coordinator living in the same process.

The coordinator runs on its own asyncio loop (in another thread); each call here is handed to
that loop, as the gRPC service hands its calls, with the same messages and the same refusals.
Nothing is serialised: the messages are passed as objects, the tensor chunks as they are cut.
It is the transport of ``fedkube.simulation``, never a privacy boundary.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

import numpy as np

from fedkube.errors import AggregatorUnavailable, UpdateRefused
from fedkube.proto import fedkube_pb2 as pb
from fedkube.transport.link import SiteLink, UpdateMessage
from fedkube.wire.chunk_frames import ChunkPart, decode_update_part
from fedkube.wire.tensors import iter_parts

T = TypeVar("T")

EventQueue = asyncio.Queue[pb.Event | None]


class UpdateIntake(Protocol):
    """One update being received, as the coordinator's ``UpdateReception`` is."""

    def feed(self, part: pb.UpdatePart | ChunkPart) -> None: ...

    def finish(self) -> int: ...

    def abandon(self) -> None: ...


class Hub(Protocol):
    """What a site calls on the coordinator: the methods the gRPC service calls too."""

    def connect(self, job: str, site: str) -> EventQueue: ...

    def disconnect(self, site: str, queue: EventQueue) -> None: ...

    def model_for(self, request: pb.ModelRequest) -> tuple[pb.ModelHeader, list[np.ndarray]]: ...

    def reception(self, authorise: Callable[[str], None] | None = None) -> UpdateIntake: ...

    def report_evaluation(self, msg: pb.Evaluation) -> None: ...

    def advertise_keys(self, msg: pb.KeyAdvertisement) -> None: ...

    def share_keys(self, msg: pb.KeyShares) -> None: ...

    def reveal_shares(self, msg: pb.Reveal) -> None: ...

    def sign_survivors(self, msg: pb.Consistency) -> None: ...

    def decline_task(self, msg: pb.Decline) -> None: ...


class InProcessLink(SiteLink):
    endpoint = "in-process"

    def __init__(
        self, hub: Hub, loop: asyncio.AbstractEventLoop, stopped: threading.Event | None = None
    ) -> None:
        self.hub = hub
        self.loop = loop
        # Set when the simulation ends: every call is then refused, which ends the site.
        self.stopped = stopped or threading.Event()

    def _on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        if self.stopped.is_set():
            raise UpdateRefused("the in-process aggregator has stopped")
        if self.loop.is_closed() or not self.loop.is_running():
            raise AggregatorUnavailable("the in-process aggregator is not running")
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    def subscribe(self, request: pb.JoinRequest) -> Iterator[pb.Event]:
        queue = self._on_loop(lambda: self.hub.connect(request.job, request.site))
        try:
            while True:
                event = asyncio.run_coroutine_threadsafe(queue.get(), self.loop).result()
                if event is None:  # the coordinator let this connection go
                    return
                yield event
                if event.HasField("finished"):
                    return
        finally:
            if self.loop.is_running() and not self.stopped.is_set():
                self._on_loop(lambda: self.hub.disconnect(request.site, queue))

    def get_model(self, request: pb.ModelRequest) -> Iterator[pb.ModelPart]:
        header, arrays = self._on_loop(lambda: self.hub.model_for(request))
        yield pb.ModelPart(header=header)
        # The chunks are cut from a snapshot the coordinator never changes: safe here.
        yield from iter_parts(pb.ModelPart, arrays)

    def submit_update(self, parts: Iterable[UpdateMessage]) -> int:
        # Cut here, in the site's thread; received in one go on the coordinator's loop. A
        # frame is read in place, as the gRPC service reads it.
        every = [decode_update_part(p) if isinstance(p, bytes) else p for p in parts]

        def receive() -> int:
            intake = self.hub.reception()
            try:
                for part in every:
                    intake.feed(part)
                return intake.finish()
            except BaseException:
                intake.abandon()
                raise

        return self._on_loop(receive)

    def report_evaluation(self, message: pb.Evaluation) -> None:
        self._on_loop(lambda: self.hub.report_evaluation(message))

    def advertise_keys(self, message: pb.KeyAdvertisement) -> None:
        self._on_loop(lambda: self.hub.advertise_keys(message))

    def share_keys(self, message: pb.KeyShares) -> None:
        self._on_loop(lambda: self.hub.share_keys(message))

    def reveal_shares(self, message: pb.Reveal) -> None:
        self._on_loop(lambda: self.hub.reveal_shares(message))

    def sign_survivors(self, message: pb.Consistency) -> None:
        self._on_loop(lambda: self.hub.sign_survivors(message))

    def decline_task(self, message: pb.Decline) -> None:
        self._on_loop(lambda: self.hub.decline_task(message))
