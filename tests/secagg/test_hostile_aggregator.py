"""A hostile aggregator against one honest site: every deviation below is refused by the
site's own checks, from its own copy of the manifest, before anything leaves it.

The aggregator is a test double that speaks the protocol's messages (``HostileAggregator``,
a ``SiteLink``); the site is the real ``TrainerClient`` and ``LocalTrainer``. Signed keys and
the consistency round against key substitution and split survivor lists are not built yet:
those attacks are out of this file's reach (see the README's threat models)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fedkube.data import load_site_data
from fedkube.models import initial_params
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.keys import Context
from fedkube.secagg.params import secagg_params
from fedkube.secagg.server import SecureSum
from fedkube.secagg.site import SiteSession
from fedkube.spec import parse_job
from fedkube.testing import manifest
from fedkube.trainer.client import TrainerClient
from fedkube.trainer.local import LocalTrainer

from tests.support.hostile_aggregator import HostileAggregator

JOB, SITE, PEERS = "hostile", "site-0", ["site-1", "site-2"]


class Honest:
    """The job as every site's manifest states it, and one real site serving tasks."""

    def __init__(self) -> None:
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
        self.client = TrainerClient(JOB, SITE, self.aggregator, trainer, secure=self.params)
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
    honest.aggregator.push(honest.task(pb.ADVERTISE_KEYS))  # the agreed parameters: answered
    honest.aggregator.wait_for("keys")


def test_a_plain_task_for_a_secure_job_gets_no_update_in_the_clear(honest: Honest) -> None:
    plain = pb.Task(ref=pb.RoundRef(job=JOB, round=1, attempt=1, site=SITE), stage=pb.TRAIN)
    honest.aggregator.push(plain)
    honest.answered_so_far()
    assert not honest.aggregator.of("update")


def test_a_round_already_revealed_gets_no_second_contribution(honest: Honest) -> None:
    """One honest round with two colluding peers, then the aggregator runs the same round
    again (as if it had restarted before its checkpoint): with two sums over different
    survivors it could subtract one from the other."""
    agg, params = honest.aggregator, honest.params
    peers = {p: SiteSession(JOB, p, 1, 1, params) for p in PEERS}
    total = SecureSum(Context(JOB, 1, 1), params, [v.size for v in honest.model.values()])
    agg.push(honest.task(pb.ADVERTISE_KEYS))
    total.advertise(agg.wait_for("keys")[0])
    for session in peers.values():
        total.advertise(session.advertisement(0, 10))
    roster = total.close_roster([SITE, *PEERS])

    share = honest.task(pb.SHARE_KEYS)
    share.secure.roster.extend(roster)
    agg.push(share)
    total.add_shares(agg.wait_for("shares")[0])
    for session in peers.values():
        total.add_shares(session.share_keys(roster))

    masked = honest.task(pb.MASKED_UPDATE)
    masked.secure.roster.extend(roster)
    masked.secure.inbox.extend(total.inbox(SITE))
    agg.push(masked)
    (update,) = agg.wait_for("update")
    # No training figure (loss, timing, clipped values) of the site travels beside it.
    assert update[0].header.metrics == {}

    unmask = honest.task(pb.UNMASK)
    unmask.secure.roster.extend(roster)
    unmask.secure.survivors.extend([SITE, *PEERS])
    agg.push(unmask)
    agg.wait_for("reveal")

    agg.push(honest.task(pb.ADVERTISE_KEYS, attempt=2))  # the same round, "tried again"
    agg.push(honest.task(pb.MASKED_UPDATE, attempt=2))
    honest.answered_so_far()
    assert len(agg.of("keys")) == 1 and len(agg.of("update")) == 1, "nothing more for round 1"
    agg.push(honest.task(pb.ADVERTISE_KEYS, round=2))  # the next round is answered
    agg.wait_for("keys", 2)
