"""sitesPerRound: each training round asks a random sample of the connected sites; round 0
and the final evaluation ask them all. In-process (the round engine is the aggregator's)."""

from __future__ import annotations

import pytest
from fedkube.errors import SpecError
from fedkube.simulation import simulate
from fedkube.spec import parse_job
from fedkube.testing import manifest


def sampled_job(**spec: object) -> dict:
    doc = manifest("sampled", sites=6, rounds=5, min_sites=2, **spec)
    doc["spec"]["sitesPerRound"] = 3
    return doc


def test_each_round_trains_a_fresh_sample_and_every_site_scores_the_final_model() -> None:
    result = simulate(parse_job(sampled_job()))
    samples = [tuple(h.sites) for h in result.history]
    assert [len(s) for s in samples] == [3] * 5
    # Drawn afresh each round: five draws of 3 of 6 sites are not all the same.
    assert len(set(samples)) > 1
    assert len({site for s in samples for site in s}) > 3
    # The final evaluation is every site's, sampled or not.
    assert sorted(n for n, m in result.sites.items() if "accuracy" in m) == [
        f"site-{i}" for i in range(6)
    ]
    # The draw is seeded from the job's seed: a simulation repeats.
    again = simulate(parse_job(sampled_job()))
    assert [tuple(h.sites) for h in again.history] == samples


def test_sampled_rounds_under_secure_aggregation_unmask_the_sample() -> None:
    doc = sampled_job(security={"secureAggregation": {"threshold": 4}})
    doc["spec"]["sitesPerRound"] = 5
    result = simulate(parse_job(doc))
    for h in result.history:
        assert len(h.sites) == 5
        assert h.secure_aggregation is not None
        assert h.secure_aggregation.revealed_by == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sitesPerRound": 1}, "sitesPerRound (1) must be at least minSitesPerRound (2)"),
        ({"sitesPerRound": 7}, "at most the number of sites (6)"),
        (
            {"sitesPerRound": 3, "security": {"secureAggregation": {"threshold": 4}}},
            "sitesPerRound (3) must be at least the secure-aggregation threshold (4)",
        ),
    ],
)
def test_a_sample_that_could_not_close_a_round_is_refused(change: dict, message: str) -> None:
    doc = sampled_job()
    doc["spec"].update(change)
    with pytest.raises(SpecError, match=r"sitesPerRound") as e:
        parse_job(doc)
    assert message in str(e.value)
