"""The coordinator's rules for a round's key exchange made ahead, on the last round's masked
updates and reveals: the round opens at MASKED_UPDATE only when every connected site holds
keys in it, and keys a site sent before it reconnected are void, since a restarted process
no longer holds their private halves. Driven directly (no gRPC), so the narrow moments a
restart would have to hit are reached every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedkube.aggregator.coordinator import Coordinator
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg.keys import Context
from fedkube.secagg.server import SecureSum
from fedkube.secagg.site import SiteSession
from fedkube.spec import parse_job
from fedkube.strategy import FedAvg
from fedkube.testing import manifest

SITES = ["site-0", "site-1", "site-2"]


def coordinator(tmp_path: Path) -> Coordinator:
    doc = manifest("keys", sites=3, rounds=3, min_sites=2)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}}
    c = Coordinator(parse_job(doc), {"w": np.zeros(4, np.float32)}, FedAvg(), tmp_path)
    for s in SITES:
        c.connect("keys", s)
    return c


def session(c: Coordinator, site: str, round: int) -> SiteSession:
    assert c.secure is not None
    return SiteSession("keys", site, round, 1, c.secure.params)


def exchanged_ahead(c: Coordinator, sharing: list[str]) -> dict[str, SiteSession]:
    """Round 1's exchange as the coordinator sets it up in round 0's UNMASK stage: every
    site's keys in the roster, shares from ``sharing`` only."""
    assert c.secure is not None
    sessions = {s: session(c, s, 1) for s in SITES}
    upcoming = SecureSum(Context("keys", 1, 1), c.secure.params, [4])
    for s in sessions.values():
        upcoming.advertise(s.advertisement(0, 10))
    roster = upcoming.close_roster(SITES)
    for name in sharing:
        upcoming.add_shares(sessions[name].share_keys(roster))
    c.secure.upcoming = upcoming
    return sessions


def test_a_round_exchanged_ahead_opens_at_masked_update(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    sessions = exchanged_ahead(c, SITES)
    r = c.open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.MASKED_UPDATE and [k.site for k in r.secure.roster] == SITES
    task = c.sites["site-0"].queue.get_nowait().task
    assert task.stage == pb.MASKED_UPDATE and len(task.secure.roster) == 3
    # The task carries what the site needs to mask at once: the others' shares for it.
    assert sessions["site-0"].receive_shares(task.secure.inbox) == SITES


def test_a_connected_site_without_shares_means_the_full_exchange(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    exchanged_ahead(c, ["site-0", "site-1"])  # site-2's reveal (and shares) did not arrive
    r = c.open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.ADVERTISE_KEYS, "no connected site is left out of a round"
    assert {c.sites[s].queue.get_nowait().task.stage for s in SITES} == {pb.ADVERTISE_KEYS}


def test_a_site_that_reconnects_voids_the_exchange_made_ahead(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    exchanged_ahead(c, SITES)
    c.connect("keys", "site-2")  # a restarted trainer: its keys died with the old process
    assert c.secure.upcoming is None
    r = c.open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.ADVERTISE_KEYS, "the full exchange, not a roster with keys nobody holds"


def test_a_site_that_reconnects_before_the_roster_closes_is_asked_again(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    r = c.open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.ADVERTISE_KEYS
    c.advertise_keys(session(c, "site-1", 1).advertisement(0, 10))
    assert "site-1" in r.done and "site-1" in r.secure.advertised
    queue = c.connect("keys", "site-1")
    assert "site-1" not in r.done and "site-1" not in r.secure.advertised
    assert queue.get_nowait().task.stage == pb.ADVERTISE_KEYS  # it advertises afresh
