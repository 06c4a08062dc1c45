"""A site's side of secure aggregation's stages (``fedkube.secagg.site`` does the maths).

The site trains once the round's key shares are in, and only the masked update leaves it.
Each masked update carries the site's keys for the next round, and each reveal its shares for
that round, so in steady state a secure round is two exchanges: the masked update and the
reveal. Every task is first checked against this site's own copy of the manifest
(``refusal``): parameters it did not agree, a plain task, a second contribution to a round it
revealed. A round run again (the aggregator restarted before saving it) gets the release the
site kept (``Contribution``), for the same model and, once revealed, the same survivors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol, TypeVar

import numpy as np

from fedkube.errors import SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.signed_keys import SigningIdentity
from fedkube.secagg.site import SiteSession
from fedkube.stats.score_counts import SCORE_COUNTS, to_masked
from fedkube.trainer.contribution import Contribution, ContributionStore, Label
from fedkube.trainer.guards import SiteGuards
from fedkube.trainer.local import LocalTrainer
from fedkube.trainer.stage_types import SiteSource, Trained
from fedkube.transport.link import SiteLink, UpdateMessage
from fedkube.wire.tensors import Params

log = logging.getLogger("fedkube.trainer")
M = TypeVar("M")
R = TypeVar("R")

STATISTICS_ROUND = 0


def session_matches(session: SiteSession, task: pb.Task) -> bool:
    return (session.context.round, session.context.attempt) == (task.ref.round, task.ref.attempt)


class SecureSiteHost(Protocol):
    """What the secure stages use of the site's client: its names and link, its guards,
    its data, and the plain steps (fetch, train, score, send) the stages reuse."""

    job: str
    site: str
    link: SiteLink
    guards: SiteGuards
    source: SiteSource | None
    model_digests: dict[int, bytes]

    @property
    def trainer(self) -> LocalTrainer: ...

    def rows(self) -> int: ...

    def send(self, task: pb.Task, what: str, call: Callable[[M], R], request: M) -> R | None: ...

    def fetch_model(self, round: int) -> tuple[int, Params]: ...

    def train_task(self, task: pb.Task) -> Trained | None: ...

    def keep_scores(self, task: pb.Task, metrics: dict[str, float]) -> None: ...

    def released_counts(self, counts: np.ndarray) -> np.ndarray: ...

    def decline(self, task: pb.Task, reason: str) -> None: ...

    def update_parts(
        self,
        task: pb.Task,
        version: int,
        update: Params,
        metrics: dict[str, float],
        next_round_keys: pb.KeyAdvertisement | None = None,
        unopened_shares: Sequence[str] = (),
        revealed_for: Sequence[str] = (),
    ) -> Iterator[UpdateMessage]: ...


class SecureStages:
    def __init__(
        self,
        client: SecureSiteHost,
        params: pb.SecAggParams,
        identity: SigningIdentity | None,
        job_sites: Mapping[str, int | None] | None,
    ) -> None:
        self.c = client
        # What this site's own copy of the manifest says secure aggregation must be.
        self.params = params
        # Under mutual TLS: the site's certificate and key, which sign its keys and check
        # everyone else's; and the sites its manifest lists.
        self.identity = identity
        self.job_sites = job_sites
        # The rounds this site revealed shares for and whether it revealed its counts of the
        # final model are the client's guards (``SiteGuards``), kept across restarts.
        # The session of the round this site has keys in, the next round's (advertised with
        # the masked update), and the masked tensors' sizes, known after the first training,
        # so a mask can be made before the update exists.
        self.session: SiteSession | None = None
        self.upcoming: SiteSession | None = None
        self.update_sizes: list[int] = []
        self.kept = ContributionStore(client.guards.folder)

    def refusal(self, task: pb.Task) -> str | None:
        """Why this task of a secure job must not be answered, judged from this site's own
        manifest."""
        if not task.HasField("secure"):
            return (
                "a plain task for a job with secure aggregation: the update would go in the clear"
            )
        if task.secure.params != self.params:
            got, want = task.secure.params, self.params
            differ = [
                f.name
                for f in want.DESCRIPTOR.fields
                if getattr(got, f.name) != getattr(want, f.name)
            ]
            return (
                f"the task's secure-aggregation parameters differ from this site's manifest in "
                f"{', '.join(differ)}; the site answers only what its own manifest agreed"
            )
        answering = task.stage in (pb.ADVERTISE_KEYS, pb.MASKED_UPDATE)
        guards = self.c.guards
        if not answering or self._kept_for(task) is not None:
            return None  # a stage past the update, or the round again: the same release
        if task.ref.round in guards.revealed:
            return f"this site already revealed its shares for round {task.ref.round}"
        if task.secure.scores_only and guards.scored_final:
            # Two sums of the same counts over different survivors would give away the
            # difference: one site's scores.
            return "this site already revealed its counts of the final model; it scores it once"
        return None

    def _kept_for(self, task: pb.Task) -> Label | None:
        """The label of this site's kept release of the task's round, if it has one."""
        label = self.kept.label()
        if label is not None and label.answers(task.ref.round, task.secure.scores_only):
            return label
        return None

    def _check_same_survivors(self, task: pb.Task) -> None:
        """A round this site revealed is revealed again only for the same survivors."""
        before = self.c.guards.survivors_of(task.ref.round)
        now = sorted(task.secure.survivors)
        if before is None or now == before:
            return
        raise SecureAggregationError(
            f"this site revealed its shares of round {task.ref.round} for the survivors "
            f"{', '.join(before)}, and reveals them again only for the same sites, not for "
            f"{', '.join(now)} (two sums over different sites would give away one site's update)"
        )

    def handle(self, task: pb.Task) -> None:
        """Answer one stage of a secure round (its task passed ``refusal``)."""
        if task.stage == pb.ADVERTISE_KEYS:
            self.session, self.upcoming = (
                self._new_session(task, task.ref.round, task.ref.attempt),
                None,
            )
            advertisement = self.session.advertisement(task.model_version, self.c.rows())
            self.c.send(task, "keys", self.c.link.advertise_keys, advertisement)
            return
        session = self.session
        if session is None or not session_matches(session, task):
            # This process has no keys in the round (it restarted, or refused a roster).
            log.info(
                "round %d: no keys for %s here; waiting for the next round",
                task.ref.round,
                pb.Stage.Name(task.stage),
            )
            self.c.decline(
                task,
                f"this site holds no keys of round {task.ref.round} attempt "
                f"{task.ref.attempt} (it restarted, or refused the round's roster)",
            )
            return
        try:
            if task.stage == pb.SHARE_KEYS:
                shares = session.share_keys(task.secure.roster)
                self.c.send(task, "key shares", self.c.link.share_keys, shares)
                self._prepare_mask(session)
            elif task.stage == pb.MASKED_UPDATE:
                self._send_masked_update(task, session)
            elif task.stage == pb.CONSISTENCY:
                self._check_same_survivors(task)
                model = self.c.model_digests.get(task.ref.round, b"")
                signed = session.sign_survivors(task.secure.survivors, model)
                self.c.send(task, "survivors' signature", self.c.link.sign_survivors, signed)
            elif task.stage == pb.UNMASK:
                self._check_same_survivors(task)
                self._reveal(task, session)
        except SecureAggregationError as e:
            # The relayed messages break the protocol: answering could unmask this site.
            self.session = self.upcoming = None
            log.error("round %d: secure aggregation stopped at this site: %s", task.ref.round, e)
            self.c.decline(task, f"secure aggregation stopped at this site: {e}")

    def _new_session(self, task: pb.Task, round: int, attempt: int) -> SiteSession:
        return SiteSession(
            self.c.job,
            self.c.site,
            round,
            attempt,
            task.secure.params,
            identity=self.identity,
            job_sites=self.job_sites,
        )

    def _prepare_mask(self, session: SiteSession) -> None:
        # The mask does not depend on the update: made while the other sites work.
        if self.update_sizes:
            session.prepare_mask(self.update_sizes)

    def _send_masked_update(self, task: pb.Task, session: SiteSession) -> None:
        # A share that does not open leaves its sender out of this site's mask; the sender
        # is named with the update, and one of the two leaves the round (secagg.disputes).
        session.receive_shares(task.secure.inbox)
        if session.unopened:
            log.warning(
                "round %d: the key shares of %s did not open here; named to the aggregator",
                *(task.ref.round, ", ".join(session.unopened)),
            )
        release = self._release(task, session)
        if release is None:
            return
        counts = list(release.counts.values())
        values = session.masked_release(list(release.released.values()), counts)
        if release.released:
            self.update_sizes = [v.size for v in values]
        masked = dict(zip([*release.released, *release.counts], values, strict=True))
        version, metrics = release.version, release.metrics
        # The next round's keys ride along, so its roster is known before this round ends
        # (round 0 makes no model: round 1 trains the same version).
        upcoming = self._new_session(task, task.ref.round + 1, 1)
        next_version = task.model_version + min(task.ref.round, 1)
        keys = upcoming.advertisement(next_version, self.c.rows())
        # A round this site revealed before: it says for which survivors, so the aggregator
        # can show that list (and take other senders out of this try) rather than have it
        # decline at the reveal.
        revealed_for = self.c.guards.survivors_of(task.ref.round) or []
        parts = self.c.update_parts(
            task,
            version,
            masked,
            metrics,
            next_round_keys=keys,
            unopened_shares=session.unopened,
            revealed_for=revealed_for,
        )
        if self.c.send(task, "masked update", self.c.link.submit_update, parts) is not None:
            self.upcoming = upcoming
            log.info("round %d: masked update sent", task.ref.round)

    def _release(self, task: pb.Task, session: SiteSession) -> Contribution | None:
        """What this site releases in the round: the kept one when the round is run again on
        the same model; otherwise made now (trained, scored or counted) and kept before it
        leaves. None when the site declines."""
        round, revealed = task.ref.round, task.ref.round in self.c.guards.revealed
        label = self._kept_for(task)
        if label is not None and round != STATISTICS_ROUND:
            self.c.fetch_model(round)  # its digest: the same model, the same release
            served = self.c.model_digests.get(round, b"")
            if served != label.model:
                if revealed:
                    self._decline(
                        task,
                        f"this site already revealed its shares for round {round}, for another "
                        f"model (sha256 {label.model.hex()[:12]}..., now {served.hex()[:12]}...): "
                        "it answers a round once",
                    )
                    return None
                label = None  # not revealed: a release for the model served now
        if label is not None:
            kept = self.kept.load()
            if kept is not None and kept.label == label:
                sent = "the statistics it sent before" if round == 0 else "the release it kept"
                log.info("round %d: run again; this site sends %s", round, sent)
                return kept
            if revealed:
                self._decline(
                    task,
                    f"this site already revealed its shares for round {round}, and what it "
                    "released then cannot be read (its log names the file)",
                )
                return None
        release = self._make_release(task, session, task.secure.scores_only)
        self.kept.keep(release)
        return release

    def _decline(self, task: pb.Task, reason: str) -> None:
        log.error("round %d: task refused: %s", task.ref.round, reason)
        self.c.decline(task, reason)

    def _make_release(self, task: pb.Task, session: SiteSession, scores_only: bool) -> Contribution:
        round = task.ref.round
        if round == STATISTICS_ROUND:
            assert self.c.source is not None
            counts = self.c.source.statistics(secure=True)
            return Contribution(Label(round, False, b""), task.model_version, {}, dict(counts))
        if scores_only:
            # The final evaluation: this site's counts, masked; nothing is trained.
            version, tensors = self.c.fetch_model(round)
            scores = self.c.trainer.evaluate(self.c.trainer.split(tensors)[0], final=True)
            self.c.keep_scores(task, scores.metrics)
            ready = to_masked(self.c.released_counts(scores.counts))
            model = self.c.model_digests.get(round, b"")
            return Contribution(Label(round, True, model), version, {}, {SCORE_COUNTS: ready})
        trained = self.c.train_task(task)
        assert trained is not None  # MASKED_UPDATE trains
        released = session.protect(list(trained.update.values()))
        # The evaluation's counts, when the task scored the model, after the update.
        counts = {SCORE_COUNTS: to_masked(trained.counts)} if trained.counts is not None else {}
        return Contribution(
            Label(round, False, self.c.model_digests.get(round, b"")),
            trained.version,
            dict(zip(trained.update, released, strict=True)),
            counts,
            trained.metrics,
        )

    def _reveal(self, task: pb.Task, session: SiteSession) -> None:
        secure = task.secure
        reveal = session.reveal(secure.survivors, secure.dropped, secure.consistency)
        # Remembered before the shares leave: a crash after sending must not forget it.
        self.c.guards.reveal(task.ref.round, secure.scores_only, list(secure.survivors))
        self.session = None
        upcoming, self.upcoming = self.upcoming, None
        if upcoming is not None and secure.next_roster:
            try:
                reveal.next_round_shares.CopyFrom(upcoming.share_keys(secure.next_roster))
                self.session = upcoming
            except SecureAggregationError as e:
                # Only the next round's exchange is refused; this round's reveal still goes.
                log.error("round %d: next round's roster refused: %s", task.ref.round + 1, e)
        self.c.send(task, "shares", self.c.link.reveal_shares, reveal)
        if self.session is not None:
            self._prepare_mask(self.session)
