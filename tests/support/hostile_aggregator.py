"""An aggregator that speaks the wire protocol's messages to one real site and deviates on
purpose. It is a ``SiteLink``: the site's real client code (``TrainerClient``) runs against
it exactly as over gRPC, and every message the site sends is recorded."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from fedkube.proto import fedkube_pb2 as pb
from fedkube.transport.link import SiteLink, UpdateMessage
from fedkube.wire.tensors import Params, iter_chunks, specs_of, to_spec


class HostileAggregator(SiteLink):
    endpoint = "hostile-aggregator"

    def __init__(self, job: str, model: Params) -> None:
        self.job = job
        self.model = model
        self._events: queue.Queue[pb.Event] = queue.Queue()
        self.sent: list[tuple[str, Any]] = []  # (call, message) the site sent
        self._changed = threading.Condition()

    # -- what the test does ---------------------------------------------------------------

    def push(self, task: pb.Task) -> None:
        self._events.put(pb.Event(task=task))

    def finish(self) -> None:
        self._events.put(pb.Event(finished=pb.Finished(job=self.job, succeeded=True)))

    def wait_for(self, call: str, count: int = 1, timeout: float = 60) -> list[Any]:
        """The site's messages of ``call`` once ``count`` of them arrived."""
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.of(call)) >= count, timeout)
        assert ok, f"the site sent {len(self.of(call))} {call}, not {count}: {self.sent}"
        return self.of(call)

    def of(self, call: str) -> list[Any]:
        return [m for c, m in self.sent if c == call]

    def _record(self, call: str, message: Any) -> None:
        with self._changed:
            self.sent.append((call, message))
            self._changed.notify_all()

    # -- the site's side of the protocol ----------------------------------------------------

    def subscribe(self, request: pb.JoinRequest) -> Iterator[pb.Event]:
        while True:
            event = self._events.get(timeout=120)
            yield event
            if event.HasField("finished"):
                return

    def get_model(self, request: pb.ModelRequest) -> Iterator[pb.ModelPart]:
        header = pb.ModelHeader(
            ref=request.ref,
            model_version=0,
            tensors=[to_spec(i) for i in specs_of(self.model)],
            codec=pb.RAW,
        )
        yield pb.ModelPart(header=header)
        for chunk in iter_chunks(list(self.model.values())):
            yield pb.ModelPart(chunk=chunk)

    def submit_update(self, parts: Iterable[UpdateMessage]) -> int:
        every = [pb.UpdatePart.FromString(p) if isinstance(p, bytes) else p for p in parts]
        self._record("update", every)
        return sum(len(p.chunk.data) for p in every if p.HasField("chunk"))

    def report_evaluation(self, message: pb.Evaluation) -> None:
        self._record("evaluation", message)

    def advertise_keys(self, message: pb.KeyAdvertisement) -> None:
        self._record("keys", message)

    def share_keys(self, message: pb.KeyShares) -> None:
        self._record("shares", message)

    def reveal_shares(self, message: pb.Reveal) -> None:
        self._record("reveal", message)

    def sign_survivors(self, message: pb.Consistency) -> None:
        self._record("consistency", message)

    def decline_task(self, message: pb.Decline) -> None:
        self._record("decline", message)
