"""sitesPerRound: which connected sites a training round asks."""

from __future__ import annotations

import random

from fedkube.aggregator.rounds import OpenRound


def draw_sample(r: OpenRound, connected: set[str], size: int, seed: int) -> set[str]:
    """``size`` of the connected sites, drawn at random for this round and attempt.

    The draw is seeded from the job's seed so a simulation repeats; it is the aggregator's
    choice, so update-level privacy claims no amplification from it."""
    rng = random.Random(f"{seed}/{r.number}/{r.attempt}")
    pool = sorted(connected)
    return set(rng.sample(pool, min(size, len(pool))))


def in_sample(r: OpenRound, site: str, size: int | None) -> bool:
    """Whether a site that connects while ``r`` is open is asked: when the round samples,
    only a site of the sample, or one that fills a place the sample could not."""
    if r.sample is None or site in r.sample:
        return True
    assert size is not None
    if len(r.sample) < size:
        r.sample.add(site)
        return True
    return False
