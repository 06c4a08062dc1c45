"""A hostile aggregator against one honest site: every deviation below is refused by the
site's own checks, from its own copy of the manifest, before anything leaves it.

The aggregator is a test double that speaks the protocol's messages (``HostileAggregator``,
a ``SiteLink``); the site is the real ``TrainerClient`` and ``LocalTrainer``. Under mutual TLS
the sites sign their keys and the survivors' list (the consistency stage), so key substitution
and split survivor lists are refused too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedkube.data import load_site_data
from fedkube.models.registry import initial_params
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg import keys
from fedkube.secagg.keys import Context
from fedkube.secagg.params import secagg_params
from fedkube.secagg.server import SecureSum
from fedkube.secagg.signed_keys import SigningIdentity, survivors_bytes
from fedkube.secagg.site import SiteSession
from fedkube.security.certs import create_consortium
from fedkube.spec import parse_job
from fedkube.stats.score_counts import BLOCK, LIMBS, SCORE_COUNTS
from fedkube.testing import manifest
from fedkube.trainer.client import TrainerClient
from fedkube.trainer.local import LocalTrainer
from fedkube.wire.digest import model_digest
from fedkube.wire.tensors import Params

from tests.support.hostile_aggregator import HostileAggregator

JOB, SITE, PEERS = "hostile", "site-0", ["site-1", "site-2"]
# A final evaluation's counts: one block (not personalised), each count as limbs.
COUNTS_SIZE = BLOCK * LIMBS


class Honest:
    """The job as every site's manifest states it, and one real site serving tasks (signing
    its keys with its certificate when given the consortium's certificates)."""

    def __init__(self, pki: Path | None = None) -> None:
        doc = manifest(JOB, sites=3, rounds=3, min_sites=2)
        doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
        doc["spec"]["privacy"] = {"updateLevel": {"clipNorm": 1.0, "noiseMultiplier": 1.0}}
        self.spec = parse_job(doc).spec
        params = secagg_params(self.spec)
        assert params is not None
        self.params = params
        data = load_site_data(self.spec, SITE)
        self.model = initial_params(self.spec.task, data.num_features, data.num_classes)
        self.aggregator = HostileAggregator(JOB, self.model)
        trainer = LocalTrainer(self.spec.task, data, SITE, None, self.spec.privacy)
        self.client = TrainerClient(
            JOB,
            SITE,
            self.aggregator,
            trainer,
            secure=self.params,
            identity=SigningIdentity.from_folder(pki / "sites" / SITE) if pki else None,
            job_sites=dict.fromkeys([SITE, *PEERS]),
        )
        self.thread = threading.Thread(target=self.client.run, daemon=True)
        self.thread.start()
        self.markers = 0

    def task(
        self,
        stage: pb.Stage,
        round: int = 1,
        attempt: int = 1,
        params: pb.SecAggParams | None = None,
    ) -> pb.Task:
        task = pb.Task(
            ref=pb.RoundRef(job=JOB, round=round, attempt=attempt, site=SITE),
            stage=stage,
            model_version=round - 1,
        )
        task.secure.params.CopyFrom(params or self.params)
        return task

    def peers(self, pki: Path | None = None, attempt: int = 1) -> dict[str, SiteSession]:
        """The two other sites, as the aggregator's accomplices (signing with their own
        certificates when given the consortium's)."""
        return {
            p: SiteSession(JOB, p, 1, attempt, self.params,
                           identity=SigningIdentity.from_folder(pki / "sites" / p) if pki else None)
            for p in PEERS
        }  # fmt: skip

    def advertised(
        self, peers: dict[str, SiteSession], attempt: int = 1, scores_only: bool = False
    ) -> tuple[SecureSum, list[pb.SiteKeys]]:
        """Round 1 up to its closed roster: this site's keys and the peers'."""
        sizes = [COUNTS_SIZE] if scores_only else [v.size for v in self.model.values()]
        total = SecureSum(Context(JOB, 1, attempt), self.params, sizes)
        advertise = self.task(pb.ADVERTISE_KEYS, attempt=attempt)
        advertise.secure.scores_only = scores_only
        self.aggregator.push(advertise)
        total.advertise(self.aggregator.wait_for("keys", attempt)[-1])
        for session in peers.values():
            total.advertise(session.advertisement(0, 10))
        return total, total.close_roster([SITE, *PEERS])

    def to_the_masked_update(
        self,
        peers: dict[str, SiteSession],
        evaluate: bool = False,
        scores_only: bool = False,
        attempt: int = 1,
        wait: bool = True,
    ) -> tuple[SecureSum, list[pb.SiteKeys], Any]:
        """Round 1 up to this site's masked update (returned, with the sum and roster); with
        ``evaluate`` the round scores the model first, with ``scores_only`` it only scores it
        (a final evaluation). ``attempt``: the round's try (the n-th this site is sent).
        Without ``wait`` the update is not waited for (None)."""
        total, roster = self.advertised(peers, attempt, scores_only)
        share = self.task(pb.SHARE_KEYS, attempt=attempt)
        share.secure.scores_only = scores_only
        share.secure.roster.extend(roster)
        self.aggregator.push(share)
        total.add_shares(self.aggregator.wait_for("shares", attempt)[-1])
        for session in peers.values():
            total.add_shares(session.share_keys(roster))
        masked = self.task(pb.MASKED_UPDATE, attempt=attempt)
        masked.evaluate = evaluate or scores_only
        masked.secure.scores_only = scores_only
        masked.secure.roster.extend(roster)
        masked.secure.inbox.extend(total.inbox(SITE))
        self.aggregator.push(masked)
        update = self.aggregator.wait_for("update", attempt)[-1] if wait else None
        return total, roster, update

    def unmasked_sum(self, attempt: int, scores_only: bool = False) -> list[np.ndarray]:
        """Round 1's try ``attempt`` in full, every site a survivor; the peers release zeros
        (no noise: they are the aggregator's), so the sum is this site's release alone. With
        ``scores_only``, a final evaluation: its counts."""
        peers = self.peers(attempt=attempt)
        total, roster, update = self.to_the_masked_update(
            peers, attempt=attempt, scores_only=scores_only
        )
        for part in update[1:]:
            values = np.frombuffer(part.chunk.data, dtype=np.uint32)
            total.fold(part.chunk.tensor, part.chunk.offset // 4, values)
        total.commit(SITE)
        for name, session in peers.items():
            session.receive_shares(total.inbox(name))
            if scores_only:
                released = session.masked_release([], [np.zeros(COUNTS_SIZE, np.uint32)])
            else:
                released = session.masked_release([np.zeros(v.size) for v in self.model.values()])
            for tensor, masked in enumerate(released):
                total.fold(tensor, 0, masked.reshape(-1))
            total.commit(name)
        survivors, dropped = total.unmask_request()
        unmask = self.unmask(roster, survivors, attempt)
        unmask.secure.scores_only = scores_only
        self.aggregator.push(unmask)
        total.add_reveal(self.aggregator.wait_for("reveal", attempt)[-1])
        for session in peers.values():
            total.add_reveal(session.reveal(survivors, dropped))
        return total.unmasked_sum()

    def unmask(self, roster: list[pb.SiteKeys], survivors: list[str], attempt: int) -> pb.Task:
        unmask = self.task(pb.UNMASK, attempt=attempt)
        unmask.secure.roster.extend(roster)
        unmask.secure.survivors.extend(survivors)
        unmask.secure.dropped.extend(sorted({SITE, *PEERS} - set(survivors)))
        return unmask

    def answered_so_far(self) -> None:
        """Every task pushed before has been handled: an evaluation marker came back."""
        self.markers += 1
        marker = pb.Task(ref=pb.RoundRef(job=JOB, round=9, site=SITE), stage=pb.EVALUATE)
        marker.evaluate = True
        self.aggregator.push(marker)
        self.aggregator.wait_for("evaluation", self.markers)

    def stop(self) -> None:
        self.aggregator.finish()
        self.thread.join(30)


@pytest.fixture()
def honest() -> Iterator[Honest]:
    site = Honest()
    yield site
    site.stop()


def lowered(params: pb.SecAggParams, **change: float) -> pb.SecAggParams:
    out = pb.SecAggParams()
    out.CopyFrom(params)
    for name, value in change.items():
        setattr(out, name, value)
    return out


@pytest.mark.parametrize(
    "change",
    [{"threshold": 1}, {"noise_stddev": 0.0}, {"clip_norm": 100.0}, {"num_sites": 2}],
    ids=["threshold", "noise", "clip", "denominator"],
)
def test_a_task_with_parameters_the_manifest_did_not_agree_is_refused(
    honest: Honest, change: dict[str, float]
) -> None:
    honest.aggregator.push(honest.task(pb.ADVERTISE_KEYS, params=lowered(honest.params, **change)))
    honest.answered_so_far()
    assert not honest.aggregator.of("keys"), "no keys for a weakened round"
    (decline,) = honest.aggregator.wait_for("decline")  # and word why, naming the field
    assert decline.stage == pb.ADVERTISE_KEYS and decline.ref.round == 1
    assert "differ from this site's manifest in " + next(iter(change)) in decline.reason
    honest.aggregator.push(honest.task(pb.ADVERTISE_KEYS))  # the agreed parameters: answered
    honest.aggregator.wait_for("keys")


def test_a_plain_task_for_a_secure_job_gets_no_update_in_the_clear(honest: Honest) -> None:
    plain = pb.Task(ref=pb.RoundRef(job=JOB, round=1, attempt=1, site=SITE), stage=pb.TRAIN)
    honest.aggregator.push(plain)
    honest.answered_so_far()
    assert not honest.aggregator.of("update")
    (decline,) = honest.aggregator.wait_for("decline")
    assert decline.stage == pb.TRAIN and "the update would go in the clear" in decline.reason


def test_the_sites_scores_leave_it_only_masked(honest: Honest) -> None:
    """A round that scores the model carries the site's counts masked after its update; a
    plain EVALUATE task (no masks) gets word that the site keeps its figures, and nothing
    of them."""
    agg = honest.aggregator
    _, _, update = honest.to_the_masked_update(honest.peers(), evaluate=True)
    header = update[0].header
    assert [t.name for t in header.tensors][-1] == SCORE_COUNTS
    assert header.metrics == {}
    honest.answered_so_far()
    for evaluation in agg.of("evaluation"):
        assert evaluation.withheld and not evaluation.counts
        assert evaluation.num_samples == 0 and dict(evaluation.metrics) == {}


def test_the_final_model_is_scored_once(honest: Honest) -> None:
    """A final evaluation (a secure round of counts only) is answered once: a second one,
    under another round number and other survivors, would let the aggregator subtract the
    two sums and read one site's counts."""
    agg = honest.aggregator
    _, roster, update = honest.to_the_masked_update(honest.peers(), scores_only=True)
    assert [t.name for t in update[0].header.tensors] == [SCORE_COUNTS]  # nothing trained
    unmask = honest.task(pb.UNMASK)
    unmask.secure.scores_only = True
    unmask.secure.roster.extend(roster)
    unmask.secure.survivors.extend([SITE, *PEERS])
    agg.push(unmask)
    agg.wait_for("reveal")
    again = honest.task(pb.ADVERTISE_KEYS, round=5)
    again.secure.scores_only = True
    agg.push(again)
    honest.answered_so_far()
    assert len(agg.of("keys")) == 1, "no keys for a second final evaluation"
    assert "already revealed its counts of the final model" in agg.wait_for("decline")[0].reason
    agg.push(honest.task(pb.ADVERTISE_KEYS, round=6))  # a training round is still answered
    agg.wait_for("keys", 2)


def test_a_round_run_again_gets_the_same_release_not_a_second_one(honest: Honest) -> None:
    """The aggregator runs round 1 again after every site revealed it (as one that restarted
    before saving the round would): the site sends what it released the first time, masked
    with the new try's keys. Trained again, its update would carry a second draw of the
    noise (DP: two releases of one round); the same release gives the same sum, bit for bit."""
    agg = honest.aggregator
    first = honest.unmasked_sum(attempt=1)
    again = honest.unmasked_sum(attempt=2)
    assert len(agg.of("keys")) == 2 and len(agg.of("reveal")) == 2
    masked = [b"".join(p.chunk.data for p in update[1:]) for update in agg.of("update")]
    assert masked[0] != masked[1], "masked with the new try's keys"
    # The second says for whom round 1 was revealed: the aggregator can show that list.
    headers = [update[0].header for update in agg.of("update")]
    assert list(headers[0].revealed_for) == [] and headers[1].revealed_for == [SITE, *PEERS]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(a.any() for a in first), "the sum is the site's update, not zeros"
    assert not agg.of("decline")


def test_a_final_evaluation_run_again_gets_the_same_counts(honest: Honest) -> None:
    """The final evaluation is answered once, except that the same evaluation run again
    (the same round: an aggregator that restarted before saving it) gets the counts the site
    released, noise and all, not a second draw."""
    agg = honest.aggregator
    first = honest.unmasked_sum(attempt=1, scores_only=True)
    again = honest.unmasked_sum(attempt=2, scores_only=True)
    assert [t.name for t in agg.of("update")[1][0].header.tensors] == [SCORE_COUNTS]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert first[0].any() and not agg.of("decline")


def test_a_round_revealed_is_revealed_again_only_for_the_same_survivors(
    honest: Honest,
) -> None:
    """Run again with site-2 called dropped, the same round would give the sum of site-0 and
    site-1: subtracted from the first, site-2's update. The site declines, and reveals
    nothing."""
    agg = honest.aggregator
    honest.unmasked_sum(attempt=1)
    _, roster, _ = honest.to_the_masked_update(honest.peers(attempt=2), attempt=2)
    agg.push(honest.unmask(roster, [SITE, "site-1"], attempt=2))
    (decline,) = agg.wait_for("decline")
    assert decline.stage == pb.UNMASK and decline.ref.attempt == 2
    assert (
        "revealed its shares of round 1 for the survivors site-0, site-1, site-2, and reveals "
        "them again only for the same sites, not for site-0, site-1"
    ) in decline.reason
    assert len(agg.of("reveal")) == 1, "nothing more revealed"
    agg.push(honest.task(pb.ADVERTISE_KEYS, round=2))  # the next round is answered
    agg.wait_for("keys", 3)


def test_a_round_revealed_is_not_answered_for_another_model(honest: Honest) -> None:
    """Round 1 again, but serving another model: the kept release is not for it, and a
    fresh one would be a second contribution to the round."""
    agg = honest.aggregator
    honest.unmasked_sum(attempt=1)
    agg.model = {k: v + 0.5 for k, v in agg.model.items()}
    honest.to_the_masked_update(honest.peers(attempt=2), attempt=2, wait=False)
    (decline,) = agg.wait_for("decline")
    assert decline.stage == pb.MASKED_UPDATE
    assert "already revealed its shares for round 1, for another model" in decline.reason
    assert len(agg.of("update")) == 1, "no second update for round 1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("consortium")
    create_consortium(root / "ours", "ours", [SITE, *PEERS], ["127.0.0.1"])
    create_consortium(root / "forged", "forged", [SITE, *PEERS], ["127.0.0.1"])
    return root


def _forge_other_keys(entry: pb.SiteKeys) -> None:
    entry.mask_public_key = keys.public_bytes(keys.new_private_key())
    entry.share_public_key = keys.public_bytes(keys.new_private_key())


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (lambda e, r, f: (e.ClearField("signature"), e.ClearField("certificate")), "not signed"),
        (lambda e, r, f: _forge_other_keys(e), "do not match their signature"),
        (lambda e, r, f: (setattr(e, "certificate", r[2].certificate),
                          setattr(e, "signature", r[2].signature)), "certificate of ['site-2']"),
        (lambda e, r, f: f.sign_entry(e), "the consortium CA did not issue"),
    ],
    ids=["keys unsigned", "keys of the aggregator's own", "another site's signature",
         "a certificate from another CA"],
)  # fmt: skip
def test_keys_substituted_in_the_roster_are_refused(
    pki: Path, attack: object, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The aggregator puts keys of its own in site-1's place (so it could agree site-0's
    pairwise mask with itself): site-0 checks every entry against the consortium CA and
    shares nothing."""
    honest = Honest(pki / "ours")
    try:
        agg = honest.aggregator
        _, closed = honest.advertised(honest.peers(pki / "ours"))
        roster = [pb.SiteKeys() for _ in range(3)]
        for mine, theirs in zip(roster, closed, strict=True):
            mine.CopyFrom(theirs)
        forger = Forger(pki / "forged" / "sites" / "site-1", Context(JOB, 1, 1))
        attack(roster[1], roster, forger)  # type: ignore[operator]
        share = honest.task(pb.SHARE_KEYS)
        share.secure.roster.extend(roster)
        agg.push(share)
        honest.answered_so_far()
        assert not agg.of("shares"), "no shares for a roster with substituted keys"
        assert message in caplog.text
        (decline,) = agg.wait_for("decline")  # the aggregator hears why, too
        assert decline.stage == pb.SHARE_KEYS and message in decline.reason
    finally:
        honest.stop()


class Forger:
    """An aggregator that signs site-1's entry itself, with a certificate for that name from a
    CA of its own."""

    def __init__(self, folder: Path, context: Context) -> None:
        self.identity = SigningIdentity.from_folder(folder)
        self.context = context

    def sign_entry(self, entry: pb.SiteKeys) -> None:
        _forge_other_keys(entry)
        message = pb.KeyAdvertisement(
            ref=self.context.ref(entry.site),
            share_public_key=entry.share_public_key,
            mask_public_key=entry.mask_public_key,
            num_samples=entry.num_samples,
        )
        self.identity.sign(message, self.context)
        entry.certificate, entry.signature = message.certificate, message.signature


def test_signed_keys_from_the_consortium_are_shared_with(pki: Path) -> None:
    honest = Honest(pki / "ours")
    try:
        _, roster = honest.advertised(honest.peers(pki / "ours"))
        mine = honest.aggregator.of("keys")[0]
        assert mine.certificate and mine.signature  # the site signs its own keys
        share = honest.task(pb.SHARE_KEYS)
        share.secure.roster.extend(roster)
        honest.aggregator.push(share)
        assert honest.aggregator.wait_for("shares")
    finally:
        honest.stop()


def _signatures(
    pki: Path, signers: list[str], survivors: list[str], model: Params
) -> list[pb.SurvivorSignature]:
    """The accomplices sign whatever list the aggregator asks them to, over the model they
    were served."""
    data = survivors_bytes(Context(JOB, 1, 1), survivors, bytes.fromhex(model_digest(model)))
    return [
        pb.SurvivorSignature(
            site=name,
            signature=SigningIdentity.from_folder(pki / "ours" / "sites" / name).sign_bytes(data),
        )
        for name in signers
    ]


@pytest.mark.parametrize(
    "attack",
    ["another list", "too few signatures", "no consistency stage", "another model"],
)
def test_split_survivor_lists_are_refused(
    pki: Path, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The aggregator shows the honest site one survivors' list and asks it to reveal for
    another (so that with a second list it could unmask site-1's update: seed shares from
    some sites, mask-key shares from others), or skips the signatures, or served the other
    sites another model than this one (so that two rounds' sums could be subtracted to read
    one site): nothing is revealed."""
    honest = Honest(pki / "ours")
    try:
        agg = honest.aggregator
        _, roster, _ = honest.to_the_masked_update(honest.peers(pki / "ours"))
        everyone = [SITE, *PEERS]
        unmask = honest.task(pb.UNMASK)
        unmask.secure.roster.extend(roster)
        if attack != "no consistency stage":
            check = honest.task(pb.CONSISTENCY)
            check.secure.roster.extend(roster)
            check.secure.survivors.extend(everyone)
            agg.push(check)
            (signed,) = agg.wait_for("consistency")
            assert signed.signature
        model = honest.model
        if attack == "another list":
            # site-1 "dropped" in the list the accomplices signed; the honest site signed all.
            shown = [SITE, "site-2"]
            unmask.secure.survivors.extend(shown)
            unmask.secure.dropped.append("site-1")
            unmask.secure.consistency.extend(_signatures(pki, PEERS, shown, model))
        elif attack == "too few signatures":
            unmask.secure.survivors.extend(everyone)
            unmask.secure.consistency.extend(_signatures(pki, PEERS[:1], everyone, model))
        elif attack == "another model":
            # The peers trained a model of the aggregator's choosing (a constant one, say).
            other = {k: np.zeros_like(v) for k, v in model.items()}
            unmask.secure.survivors.extend(everyone)
            unmask.secure.consistency.extend(_signatures(pki, PEERS, everyone, other))
        else:
            unmask.secure.survivors.extend(everyone)
        agg.push(unmask)
        honest.answered_so_far()
        assert not agg.of("reveal"), "no share revealed"
        assert "secure aggregation stopped at this site" in caplog.text
        if attack == "another model":
            assert "site-1, site-2 signed something else" in caplog.text
            assert "another model served to some sites" in caplog.text
    finally:
        honest.stop()


def test_a_survivors_list_a_threshold_signed_is_revealed_for(pki: Path) -> None:
    honest = Honest(pki / "ours")
    try:
        agg = honest.aggregator
        _, roster, _ = honest.to_the_masked_update(honest.peers(pki / "ours"))
        everyone = [SITE, *PEERS]
        check = honest.task(pb.CONSISTENCY)
        check.secure.survivors.extend(everyone)
        agg.push(check)
        (mine,) = agg.wait_for("consistency")
        unmask = honest.task(pb.UNMASK)
        unmask.secure.roster.extend(roster)
        unmask.secure.survivors.extend(everyone)
        unmask.secure.consistency.extend(
            [
                pb.SurvivorSignature(site=SITE, signature=mine.signature),
                *_signatures(pki, PEERS, everyone, honest.model),
            ]
        )
        agg.push(unmask)
        (reveal,) = agg.wait_for("reveal")
        assert {s.owner for s in reveal.self_seed_shares} == set(everyone)
        assert not reveal.mask_key_shares
    finally:
        honest.stop()
