"""One update stream as the coordinator receives it, whatever carried it: the header
(checked and admitted into the open round), then its chunks (checked one by one), then its
end (checked whole, folded). The gRPC service and the in-process transport both feed one of
these; a refused or broken update never touches the model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from fedkube.aggregator.folding import Folds
from fedkube.aggregator.round_host import RoundHost
from fedkube.aggregator.rounds import OpenRound
from fedkube.aggregator.sample_bounds import SampleBounds
from fedkube.aggregator.secure_rounds import SecureRounds
from fedkube.aggregator.statistics_round import StatisticsRound
from fedkube.aggregator.updates import SpooledUpdate, check_tensors
from fedkube.codec.base import Codec
from fedkube.codec.decoded import DecodedUpdate
from fedkube.errors import DuplicateUpdate, InvalidUpdate, RoundClosed
from fedkube.proto import fedkube_pb2 as pb
from fedkube.wire.chunk_frames import ChunkPart
from fedkube.wire.tensors import TensorInfo

log = logging.getLogger("fedkube.aggregator")


class ReceptionHost(RoundHost, Protocol):
    """What an update stream needs of the round engine: how updates are coded and laid out,
    what a site may claim, and where round 0's and secure rounds' answers go."""

    uplink: Codec | None
    update_infos: list[TensorInfo]
    sample_bounds: SampleBounds
    secure: SecureRounds | None
    round0: StatisticsRound


class UpdateReception:
    def __init__(self, host: ReceptionHost, authorise: Callable[[str], None] | None = None) -> None:
        self.c = host
        self.authorise = authorise
        self.update: SpooledUpdate | None = None
        self._folding = False

    @property
    def bytes_received(self) -> int:
        """Tensor bytes taken so far."""
        return self.update.bytes_received if self.update is not None else 0

    def feed(self, part: pb.UpdatePart | ChunkPart) -> None:
        """Take one message of the stream. Raises UpdateRefused."""
        if self.update is None:
            if isinstance(part, ChunkPart) or not part.HasField("header"):
                raise InvalidUpdate("the first message of an update must be its header")
            if self.authorise is not None:
                self.authorise(part.header.ref.site)
            self.update = self._admit(part.header)
        elif part.HasField("chunk"):
            self.update.add(part.chunk)
        else:
            raise InvalidUpdate(
                "an update has one header; a second arrived",
                site=self.update.site,
                round=self.update.round,
            )

    def finish(self) -> int:
        """The stream ended: fold the update here. Returns the tensor bytes received."""
        update = self._whole()
        decoded = self._settled_or_decoded(update)
        if decoded is not None:
            self._fold_plain(update, decoded)
        return update.bytes_received

    async def finish_aside(self, folds: Folds) -> int:
        """As ``finish``, a plain update folded on ``folds``' worker while the event loop
        serves the other transfers. Once the fold starts it completes, and counts, whatever
        becomes of the stream."""
        update = self._whole()
        decoded = self._settled_or_decoded(update)
        if decoded is None:
            return update.bytes_received
        r = self.c.open
        assert r is not None and r.accumulator is not None
        accumulator = r.accumulator
        self._folding = True  # the fold owns it: ``abandon`` leaves it alone

        def then(error: BaseException | None) -> None:
            if error is None and self.c.open is r:
                self._record(r, update, int(update.header.num_samples))
            elif r.receiving.get(update.site) is update:  # failed, or the aggregator stops
                del r.receiving[update.site]
                self.c.notify()

        await asyncio.shield(folds.start(r, lambda: accumulator.add(decoded), then))
        return update.bytes_received

    def _settled_or_decoded(self, update: SpooledUpdate) -> SpooledUpdate | DecodedUpdate | None:
        """The whole update checked: taken aside here (round 0, secure rounds: None), or
        what the mean folds. The update is closed if it is refused."""
        try:
            decoded = self._checked(update)
            if decoded is None:
                self._take_aside(update)
            return decoded
        except BaseException:
            update.close()
            raise

    def abandon(self) -> None:
        """The stream broke or was refused: let go of what arrived."""
        update, r = self.update, self.c.open
        if update is None or self._folding:
            return
        if r is not None and r.receiving.get(update.site) is update:
            del r.receiving[update.site]
            self.c.notify()
        update.close()

    def _admit(self, header: pb.UpdateHeader) -> SpooledUpdate:
        c = self.c
        c.known(header.ref.job, header.ref.site)
        site, number = header.ref.site, header.ref.round
        r = c.open
        takes = {pb.MASKED_UPDATE if c.secure else pb.TRAIN, pb.SCHEMA, pb.STATISTICS}
        if r is None or r.stage not in takes or number != r.number:
            now = f"round {r.number} is open" if r and r.stage in takes else "no round is open"
            raise RoundClosed(
                f"round {number} is not open for updates ({now}); the update is dropped",
                site=site,
                round=number,
            )
        if site in r.done or site in r.receiving:
            raise DuplicateUpdate(
                f"site {site!r} already sent its update for round {r.number}",
                site=site,
                round=number,
            )
        if header.model_version != r.model_version:
            raise InvalidUpdate(
                f"the update was trained from model version {header.model_version}, but round "
                f"{r.number} distributes version {r.model_version}",
                site=site,
                round=number,
            )
        if r.sample is not None and site not in r.sample:
            raise RoundClosed(
                f"site {site!r} is not in round {r.number}'s sample of sitesPerRound="
                f"{len(r.sample)} sites; the update is dropped",
                site=site,
                round=number,
            )
        if r.stage in (pb.SCHEMA, pb.STATISTICS):
            if site not in r.tasked:
                raise RoundClosed(
                    f"site {site!r} was not asked for stage {pb.Stage.Name(r.stage)} of round 0",
                    site=site,
                    round=number,
                )
            infos = c.round0.infos(r)
            check_tensors(header, infos)
            update = SpooledUpdate(header, infos)
        elif c.secure is not None:
            update = c.secure.begin_update(r, header)
        else:
            if header.num_samples <= 0:
                raise InvalidUpdate("num_samples must be positive", site=site, round=number)
            c.sample_bounds.check(site, header.num_samples, "the update", number)
            codec = c.uplink
            infos = codec.wire_infos(c.update_infos) if codec else c.update_infos
            check_tensors(header, infos, codec=codec.wire if codec else pb.RAW)
            update = SpooledUpdate(header, infos, c.spec.security.update_norm_bound)
            if c.spec.security.weighting == "equal":
                update.weight = 1.0  # one site's pull, whatever it claims
        r.receiving[site] = update
        return update

    def _whole(self) -> SpooledUpdate:
        if self.update is None:
            raise InvalidUpdate("empty update stream")
        return self.update

    def _checked(self, update: SpooledUpdate) -> SpooledUpdate | DecodedUpdate | None:
        """The whole update checked, and still wanted by the open round: in the model's
        layout for the mean, or None for what is kept aside (round 0, secure rounds).
        Refuses (the round untouched) if it fails a check or the round closed meanwhile."""
        c, r = self.c, self.c.open
        update.finish()
        if (
            r is None
            or r.closing
            or r.number != update.round
            or r.receiving.get(update.site) is not update
        ):
            raise RoundClosed(
                f"round {update.round} closed while the update was arriving; it is dropped",
                site=update.site,
                round=update.round,
            )
        if c.secure is None and r.stage not in (pb.SCHEMA, pb.STATISTICS):
            return self._decoded(update)  # refused here, before any fold
        return None

    def _take_aside(self, update: SpooledUpdate) -> None:
        """Round 0's statistics, or a secure round's masked update."""
        c, r = self.c, self.c.open
        assert r is not None
        if r.stage in (pb.SCHEMA, pb.STATISTICS):
            del r.receiving[update.site]
            r.bytes_received += update.bytes_received
            with contextlib.closing(update):
                self._take_statistics(update, r.stage)
            r.done[update.site] = {}
            c.notify()
            return
        assert c.secure is not None
        samples = c.secure.fold(r, update)  # it keeps the update until the stage ends
        self._record(r, update, samples)

    def _fold_plain(self, update: SpooledUpdate, decoded: SpooledUpdate | DecodedUpdate) -> None:
        r = self.c.open
        assert r is not None and r.accumulator is not None
        r.accumulator.add(decoded)  # it owns the update from here
        self._record(r, update, int(update.header.num_samples))

    def _record(self, r: OpenRound, update: SpooledUpdate, samples: int) -> None:
        """A folded update counts: the round, the site and the metrics hear of it."""
        c = self.c
        del r.receiving[update.site]
        r.bytes_received += update.bytes_received
        r.done[update.site] = r.updates[update.site] = dict(update.header.metrics)
        r.samples[update.site] = samples
        site = c.sites[update.site]
        site.last_round = r.number
        site.samples = samples
        site.update_bytes += update.bytes_received
        now = time.monotonic()
        r.first_update_at = r.first_update_at or now
        site.lateness_seconds = now - r.first_update_at
        log.info("round %d: update from %s (%d samples)", r.number, update.site, samples)
        c.notify()

    def _decoded(self, update: SpooledUpdate) -> SpooledUpdate | DecodedUpdate:
        """The update in the model's layout; a coded one is checked whole before any of it
        is folded."""
        codec = self.c.uplink
        if codec is None:
            return update
        decoded = DecodedUpdate(update, codec, self.c.update_infos)
        problem = decoded.problem()
        if problem is not None:
            raise InvalidUpdate(problem, site=update.site, round=update.round)
        return decoded

    def _take_statistics(self, update: SpooledUpdate, stage: pb.Stage) -> None:
        round0 = self.c.round0
        if stage == pb.SCHEMA:
            round0.take_schema(update.site, update.header.schema)
            return
        tensors = {
            info.name: update.read(k, 0, info.size).reshape(info.shape)
            for k, info in enumerate(update.infos)
        }
        round0.take_tensors(update.site, tensors)
