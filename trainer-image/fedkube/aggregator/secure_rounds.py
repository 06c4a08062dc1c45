"""Secure aggregation's stages, as the coordinator drives them (after Bonawitz et al. 2017).

A secure round has four stages, each a task pushed to the sites still in: ADVERTISE_KEYS
ends with the sites' public keys, SHARE_KEYS with their sealed key shares, MASKED_UPDATE with
their masked updates (trained once the shares are in; summed mod 2^32), UNMASK with the
shares that remove the masks from the sum. A stage that loses its quorum fails the attempt.

The key stages of the next round ride on this one's messages: keys on the masked updates,
the roster on the UNMASK task, shares on the reveals. When every connected site shared that
way, the next round opens at MASKED_UPDATE, so a round in steady state is two exchanges, as a
plain round is one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from fedkube.aggregator.round_host import RoundHost
from fedkube.aggregator.round_log import RoundLog
from fedkube.aggregator.round_shapes import RoundShapes
from fedkube.aggregator.rounds import OpenRound, asked_to_answer
from fedkube.aggregator.sample_bounds import SampleBounds
from fedkube.aggregator.survivors import settle
from fedkube.aggregator.updates import SpooledUpdate, check_tensors
from fedkube.errors import InvalidUpdate, RoundClosed, SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.keys import Context
from fedkube.secagg.server import SecureSum
from fedkube.spec.progress import SecureRoundRecord
from fedkube.stats.score_counts import SCORE_COUNTS, from_masked
from fedkube.wire.tensors import Params, TensorInfo

log = logging.getLogger("fedkube.aggregator")

MAX_EVALUATION_ATTEMPTS = 2


def masked_infos(infos: Sequence[TensorInfo]) -> list[TensorInfo]:
    """Masked updates carry one uint32 per value, in the update's own tensor layout."""
    return [TensorInfo(i.name, np.dtype("<u4"), i.shape) for i in infos]


def unmasked_mean(secure: SecureSum, infos: Sequence[TensorInfo], r: OpenRound) -> Params:
    """The survivors' mean update; evaluation counts that rode along go to ``r``."""
    sums = secure.unmasked_sum()
    if infos and infos[-1].name == SCORE_COUNTS:
        r.score_totals = from_masked(sums.pop())
        infos = infos[:-1]
    flat, _ = secure.decode_mean(sums)
    return {
        i.name: values.astype(i.dtype).reshape(i.shape)
        for i, values in zip(infos, flat, strict=True)
    }


class SecureHost(RoundHost, Protocol):
    """What the stages use of the round engine beyond a round's course."""

    update_infos: list[TensorInfo]
    shapes: RoundShapes
    sample_bounds: SampleBounds
    log: RoundLog
    rounds_completed: int


class SecureRounds:
    """The stage driver: owns the rounds' key exchanges and the one made ahead."""

    def __init__(self, host: SecureHost, params: pb.SecAggParams) -> None:
        self.c = host
        self.params = params
        # The next round's key exchange, set up when this round's UNMASK stage opens.
        self.upcoming: SecureSum | None = None
        # This round's masked updates in the sum so far, until its masked-update stage ends.
        self.folded: dict[str, SpooledUpdate] = {}

    def new_sum(
        self, number: int, attempt: int, infos: Sequence[TensorInfo] | None = None
    ) -> SecureSum:
        """A round's sum, of the model update's tensors unless ``infos`` says otherwise."""
        sizes = [i.size for i in (self.c.update_infos if infos is None else infos)]
        return SecureSum(Context(self.c.job.name, number, attempt), self.params, sizes)

    # -- sites coming and going ---------------------------------------------------------------

    def on_connect(self, r: OpenRound | None, site: str) -> bool:
        """A site (re)connected; whether this round's roster is closed to it. Keys live in
        the site's process: what it advertised before may be gone with a restart."""
        if self.upcoming is not None and site in self.upcoming.advertised:
            self.upcoming = None  # the next round makes the full exchange
        if r is None or r.secure is None:
            return False
        r.next_keys.pop(site, None)
        if r.stage == pb.ADVERTISE_KEYS and site in r.done:
            r.secure.withdraw(site)
            del r.done[site]
        return r.stage != pb.ADVERTISE_KEYS

    # -- messages -----------------------------------------------------------------------------

    def begin_update(self, r: OpenRound, header: pb.UpdateHeader) -> SpooledUpdate:
        if header.ref.site not in r.tasked:
            raise RoundClosed(
                f"site {header.ref.site!r} is not among round {r.number}'s masked-update senders",
                site=header.ref.site,
                round=header.ref.round,
            )
        infos = masked_infos(self.c.shapes.of(r))
        check_tensors(header, infos, codec=pb.MASKED_FIXED_POINT)
        return SpooledUpdate(header, infos)

    def fold(self, r: OpenRound, update: SpooledUpdate) -> int:
        """Add a whole masked update to the sum; the samples its site advertised. The update
        is kept (spooled) until the stage ends, in case a dispute takes it back out."""
        assert r.secure is not None
        try:
            r.secure.note_unopened(update.site, list(update.header.unopened_shares))
        except SecureAggregationError as e:
            update.close()
            raise InvalidUpdate(str(e), site=update.site, round=update.round) from None
        for tensor, start, values in update.pieces():
            r.secure.fold(tensor, start, values)
        r.secure.commit(update.site)
        self.folded[update.site] = update
        self._take_next_keys(r, update.header)
        return int(r.secure.advertised[update.site].num_samples)

    def _settle_survivors(self, r: OpenRound) -> None:
        """Who the masked-update stage leaves in the sum (``survivors.settle``); then the
        kept updates are let go."""
        folded, self.folded = self.folded, {}
        settle(r, folded)

    def advertise_keys(self, msg: pb.KeyAdvertisement) -> None:
        r, secure = self._stage_of(msg.ref, pb.ADVERTISE_KEYS)
        if not secure.params.equal_weights:
            # The weight a site signs for itself: bounded before any site sees it (each
            # site also checks the roster against its own manifest).
            self.c.sample_bounds.check(
                msg.ref.site, msg.num_samples, "the key advertisement", r.number
            )
        if msg.model_version != r.model_version:
            raise InvalidUpdate(
                f"keys for a model of version {msg.model_version}; round {r.number} trains "
                f"version {r.model_version}",
                site=msg.ref.site,
                round=msg.ref.round,
            )
        self._answer(r, msg.ref.site, lambda: secure.advertise(msg))

    def share_keys(self, msg: pb.KeyShares) -> None:
        r, secure = self._stage_of(msg.ref, pb.SHARE_KEYS)
        self._answer(r, msg.ref.site, lambda: secure.add_shares(msg))

    def sign_survivors(self, msg: pb.Consistency) -> None:
        r, secure = self._stage_of(msg.ref, pb.CONSISTENCY)
        self._answer(r, msg.ref.site, lambda: secure.add_consistency(msg))

    def reveal_shares(self, msg: pb.Reveal) -> None:
        r, secure = self._stage_of(msg.ref, pb.UNMASK)
        self._answer(r, msg.ref.site, lambda: secure.add_reveal(msg))
        if not msg.HasField("next_round_shares"):
            return
        shares, upcoming = msg.next_round_shares, self.upcoming
        expected = pb.RoundRef(job=msg.ref.job, round=r.number + 1, attempt=1, site=msg.ref.site)
        if upcoming is None or shares.ref != expected:
            log.warning(
                "site %s: shares for a next round that is not set up; ignored", msg.ref.site
            )
            return
        try:
            upcoming.add_shares(shares)
        except SecureAggregationError as e:
            log.warning("site %s: next round's shares ignored: %s", msg.ref.site, e)

    def _take_next_keys(self, r: OpenRound, header: pb.UpdateHeader) -> None:
        """Keep the next round's keys a masked update carried, if they are for it."""
        assert r.secure is not None
        if not header.HasField("next_round_keys"):
            return
        keys = header.next_round_keys
        # The next round trains the model this round makes (round 0 makes none).
        expected = pb.RoundRef(
            job=header.ref.job, round=r.number + 1, attempt=1, site=header.ref.site
        )
        if keys.ref != expected or keys.model_version != header.model_version + min(r.number, 1):
            log.warning("site %s: next round's keys name another round; ignored", header.ref.site)
            return
        try:
            SecureSum.check_keys(keys, r.secure.params)
            if not r.secure.params.equal_weights:
                self.c.sample_bounds.check(keys.ref.site, keys.num_samples, "the keys", r.number)
        except (SecureAggregationError, InvalidUpdate) as e:
            log.warning("site %s: next round's keys ignored: %s", header.ref.site, e)
            return
        r.next_keys[header.ref.site] = keys

    def _stage_of(self, ref: pb.RoundRef, stage: pb.Stage) -> tuple[OpenRound, SecureSum]:
        self.c.known(ref.job, ref.site)
        r = asked_to_answer(self.c.open, ref, stage, "message", secure=True)
        assert r.secure is not None
        return r, r.secure

    def _answer(self, r: OpenRound, site: str, take: Callable[[], None]) -> None:
        try:
            take()
        except SecureAggregationError as e:
            raise InvalidUpdate(str(e), site=site, round=r.number) from None
        r.done[site] = {}
        self.c.notify()

    # -- the stages ---------------------------------------------------------------------------

    async def run_stages(self, r: OpenRound, raw_sum: bool = False) -> Params | None:
        """Drive the round's stages; the unmasked mean (or, with ``raw_sum``, the uint32
        sum), or None without a quorum."""
        secure, quorum = r.secure, self.c.quorum
        assert secure is not None
        if r.stage == pb.ADVERTISE_KEYS:  # not opened with the last round's exchange
            if not await self.c.stage_answered(r, quorum):
                return None
            secure.close_roster(sorted(r.done))
            self.c.next_stage(r, pb.SHARE_KEYS, set(r.done))
            if not await self.c.stage_answered(r, quorum):
                return None
            self.c.next_stage(r, pb.MASKED_UPDATE, set(r.done))
        if not await self.c.stage_answered(r, quorum):
            return None
        for update in list(r.receiving.values()):
            update.close()
        self._settle_survivors(r)
        if len(r.done) < quorum:
            return None
        self.upcoming = self._next_round_roster(r)
        if secure.signed:
            # Bonawitz et al.'s consistency check: every survivor signs the list it is
            # shown, and reveals only for a list a threshold signed.
            self.c.next_stage(r, pb.CONSISTENCY, set(r.done))
            if not await self.c.stage_answered(r, secure.params.threshold):
                return None
        self.c.next_stage(r, pb.UNMASK, set(r.done))
        if not await self.c.stage_answered(r, secure.params.threshold):
            return None
        infos = self.c.shapes.of(r)
        if raw_sum:
            return {
                i.name: flat.reshape(i.shape)
                for i, flat in zip(infos, secure.unmasked_sum(), strict=True)
            }
        return unmasked_mean(secure, infos, r)

    async def final_evaluation(self) -> None:
        """The final model's evaluation as a secure round of counts only: the aggregator
        learns the sites' totals, never one site's scores. Numbered after the last round, so
        its keys are its own; a failed attempt is retried, and the job succeeds without it
        (the rounds' figures stand) when none reaches the threshold."""
        c = self.c
        version = c.rounds_completed
        for attempt in range(1, MAX_EVALUATION_ATTEMPTS + 1):
            r = c.open_round(version + 1, pb.EVALUATE, version, attempt)
            try:
                sums = await self.run_stages(r, raw_sum=True)
            except SecureAggregationError as e:
                sums = None
                log.warning("final evaluation attempt %d: %s", attempt, e)
            if sums is not None:
                assert r.secure is not None
                scored = len(r.secure.survivors)
                c.log.record_totals(version, scored, from_masked(sums[SCORE_COUNTS]))
                c.open = None
                log.info("final evaluation: counts of %d sites summed", scored)
                return
            c.abandon_round()
        log.warning("the final evaluation reached no quorum; the job ends without it")

    def open(self, r: OpenRound, connected: set[str]) -> bool:
        """Open at MASKED_UPDATE when every connected site shared keys for this round with
        its last reveal; any site without them (new, restarted, dropped) means the full
        exchange, so no connected site is left out of a round."""
        upcoming, self.upcoming = self.upcoming, None
        assert r.secure is not None
        if upcoming is None or upcoming.context != r.secure.context:
            r.stage = pb.ADVERTISE_KEYS
            return False
        if len(upcoming.sharers) < self.c.quorum or not connected <= set(upcoming.sharers):
            r.stage = pb.ADVERTISE_KEYS
            return False
        r.secure = upcoming
        r.stage = pb.MASKED_UPDATE
        return True

    def _next_round_roster(self, r: OpenRound) -> SecureSum | None:
        """The next round's exchange, its roster closed from the keys that came with this
        round's masked updates; None when too few sites sent keys (or this is the last)."""
        assert r.secure is not None
        usable = {
            n: k
            for n, k in r.next_keys.items()
            if n in r.secure.survivors and self.c.sites[n].connected
        }
        if r.number >= self.c.spec.rounds or len(usable) < self.c.quorum:
            return None
        # The next round trains (and maybe scores first) the model this round makes.
        upcoming = self.new_sum(
            r.number + 1, 1, self.c.shapes.training(self.c.shapes.evaluates(r.number))
        )
        for name in sorted(usable):
            upcoming.advertise(usable[name])
        upcoming.close_roster(sorted(usable))
        return upcoming

    def fill_task(self, task: pb.Task, r: OpenRound, site: str) -> None:
        assert r.secure is not None
        task.secure.params.CopyFrom(r.secure.params)
        task.secure.roster.extend(r.secure.roster)
        task.secure.scores_only = r.scores_only
        if r.stage == pb.MASKED_UPDATE:
            task.secure.inbox.extend(r.secure.inbox(site))
        if r.stage == pb.CONSISTENCY:
            task.secure.survivors.extend(r.secure.unmask_request()[0])
        if r.stage == pb.UNMASK:
            survivors, dropped = r.secure.unmask_request()
            task.secure.survivors.extend(survivors)
            task.secure.dropped.extend(dropped)
            task.secure.consistency.extend(r.secure.consistency_signatures())
            upcoming = self.upcoming
            if upcoming is not None and site in upcoming.advertised:
                task.secure.next_roster.extend(upcoming.roster)

    def record(self, r: OpenRound, closed_after: float) -> SecureRoundRecord:
        """What the round's history says of its stages. Masked updates from sites that then
        dropped are in the sum too."""
        assert r.secure is not None
        r.stage_seconds["UNMASK"] = closed_after - sum(r.stage_seconds.values())
        return SecureRoundRecord(
            revealed_by=len(r.done),
            dropped=r.secure.unmask_request()[1],
            faulty=sorted(r.secure.faulty),
            unopened_shares=r.secure.unopened_by_site,
            excluded=sorted(r.secure.excluded),
            stage_seconds=dict(r.stage_seconds),
        )

    def abandon(self) -> None:
        self.upcoming = None
        folded, self.folded = self.folded, {}
        for update in folded.values():
            update.close()
