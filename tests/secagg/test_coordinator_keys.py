"""The coordinator's rule for keys a site advertised before it reconnected: they are void,
since a restarted process no longer holds their private halves. Driven directly (no gRPC),
so the narrow moments a restart would have to hit are reached every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedkube.aggregator.coordinator import Coordinator
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.site import SiteSession
from fedkube.spec import parse_job
from fedkube.strategy import FedAvg

from tests.engine.jobs import manifest

SITES = ["site-0", "site-1", "site-2"]


def coordinator(tmp_path: Path) -> Coordinator:
    doc = manifest("keys", sites=3, rounds=3, min_sites=2)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    c = Coordinator(parse_job(doc), {"w": np.zeros(4, np.float32)}, FedAvg(), tmp_path)
    for s in SITES:
        c.connect("keys", s)
    return c


def keys_for(c: Coordinator, site: str, round: int) -> pb.KeyAdvertisement:
    assert c.secagg is not None
    return SiteSession("keys", site, round, 1, c.secagg).advertisement(round - 1, 10)


def test_keys_sent_with_a_reveal_open_the_next_round_at_share_keys(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    c.next_keys = {s: keys_for(c, s, 1) for s in SITES}
    r = c._open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.SHARE_KEYS and [k.site for k in r.secure.roster] == SITES
    task = c.sites["site-0"].queue.get_nowait().task
    assert task.stage == pb.SHARE_KEYS and len(task.secure.roster) == 3


def test_a_site_that_reconnects_loses_the_keys_it_sent_before(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    c.next_keys = {s: keys_for(c, s, 1) for s in SITES}
    c.connect("keys", "site-2")  # a restarted trainer: its keys died with the old process
    assert "site-2" not in c.next_keys
    r = c._open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.TRAIN, "the full exchange, not a roster with keys nobody holds"


def test_a_site_that_reconnects_before_the_roster_closes_is_asked_again(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    r = c._open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.TRAIN
    c.advertise_keys(keys_for(c, "site-1", 1))
    assert "site-1" in r.done and "site-1" in r.secure.advertised
    queue = c.connect("keys", "site-1")
    assert "site-1" not in r.done and "site-1" not in r.secure.advertised
    assert queue.get_nowait().task.stage == pb.TRAIN  # it trains and advertises afresh
