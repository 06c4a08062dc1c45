"""Under secure aggregation a site's advertised samples are its weight in every site's sum
(issue 26): the aggregator refuses an advertisement above what the site may claim, and each
site refuses a roster that gives another more than its own manifest allows, so a site that
claims 2^62 samples outweighs no one, whoever relays it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedkube.aggregator.coordinator import Coordinator
from fedkube.errors import InvalidUpdate, SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.secagg import keys
from fedkube.secagg.roster import site_weights
from fedkube.secagg.server import SecureSum
from fedkube.secagg.site import SiteSession
from fedkube.spec.load import parse_job
from fedkube.strategy.fedavg import FedAvg
from fedkube.testing import manifest

SITES = ["site-0", "site-1", "site-2"]
HUGE = 1 << 62


def coordinator(tmp_path: Path, **security: object) -> Coordinator:
    doc = manifest("claims", sites=3, rounds=3, min_sites=2)
    doc["spec"]["security"] = {"secureAggregation": {"threshold": 2}, **security}
    doc["spec"]["sites"][0]["maxSamples"] = 100
    c = Coordinator(parse_job(doc), {"w": np.zeros(4, np.float32)}, FedAvg(), tmp_path)
    for s in SITES:
        c.connect("claims", s)
    return c


def test_the_aggregator_refuses_an_advertisement_claiming_more_than_the_site_may(
    tmp_path: Path,
) -> None:
    c = coordinator(tmp_path)
    assert c.secure is not None
    r = c.open_round(1, pb.TRAIN, 0)
    assert r.stage == pb.ADVERTISE_KEYS
    liar = SiteSession("claims", "site-0", 1, 1, c.secure.params)
    with pytest.raises(InvalidUpdate) as e:
        c.secure.advertise_keys(liar.advertisement(0, 101))
    assert "claims 101 samples; site 'site-0' may claim at most 100 (sites[0].maxSamples)" in str(
        e.value
    )
    # Another site, without a bound in the manifest, still has the protocol's.
    other = SiteSession("claims", "site-1", 1, 1, c.secure.params)
    with pytest.raises(InvalidUpdate, match=r"at most 1099511627776 \(the protocol's bound"):
        c.secure.advertise_keys(other.advertisement(0, HUGE))
    c.secure.advertise_keys(
        SiteSession("claims", "site-0", 1, 1, c.secure.params).advertisement(0, 100)
    )
    assert "site-0" in r.done


def test_a_site_refuses_a_roster_that_gives_another_more_than_its_manifest_allows() -> None:
    """A hostile aggregator relays the 2^62 claim anyway: the honest site shares nothing."""
    params = pb.SecAggParams(threshold=2, clip_range=4.0)
    context = keys.Context("claims", 1, 1)
    bounds = {"site-0": 100, "site-1": None, "site-2": None}
    sessions = {s: SiteSession("claims", s, 1, 1, params, job_sites=bounds) for s in SITES}
    server = SecureSum(context, params, [4])
    for name, session in sessions.items():
        server.advertise(session.advertisement(0, HUGE if name == "site-0" else 10))
    roster = server.close_roster(SITES)
    with pytest.raises(SecureAggregationError) as e:
        sessions["site-1"].share_keys(roster)
    assert "site-0 4611686018427387904 (at most 100)" in str(e.value)
    assert "sites[].maxSamples" in str(e.value)


def test_with_equal_weights_a_claim_moves_no_weight(tmp_path: Path) -> None:
    c = coordinator(tmp_path, weighting="equal")
    assert c.secure is not None and c.secure.params.equal_weights
    roster = [pb.SiteKeys(site=s, index=i + 1, num_samples=n) for i, (s, n) in enumerate(
        zip(SITES, [HUGE, 10, 10], strict=True))]  # fmt: skip
    weights = site_weights(roster, c.secure.params)
    assert weights == {s: pytest.approx(1 / 3) for s in SITES}
