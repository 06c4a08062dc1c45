"""How many samples a site may claim, for the weight of its update or of its evaluation.

A site says how many samples it trained or scored on, and in a mean weighted by samples that
claim is its weight: a site claiming 2^62 would be the mean. So a claim is bounded by what the
site can show: its row count from round 0 where this aggregator saw it (plain statistics),
the manifest's ``sites[].maxSamples``, and the protocol's own bound in any case."""

from __future__ import annotations

from collections.abc import Callable

from fedkube.errors import InvalidUpdate
from fedkube.spec.job import JobSpec
from fedkube.spec.sites import MAX_SAMPLES


class SampleBounds:
    def __init__(self, spec: JobSpec, round0_rows: Callable[[], dict[str, int]]) -> None:
        self.spec = spec
        # Each site's rows as round 0 counted them (none under secure aggregation, or before
        # round 0, or in a job without one).
        self.round0_rows = round0_rows

    def bound(self, site: str) -> tuple[int, str]:
        """The most ``site`` may claim, and what says so."""
        bound, why = MAX_SAMPLES, "the protocol's bound, 2^40"
        index = next((i for i, s in enumerate(self.spec.sites) if s.name == site), None)
        declared = self.spec.sites[index].max_samples if index is not None else None
        if declared is not None and declared < bound:
            bound, why = declared, f"sites[{index}].maxSamples"
        rows = self.round0_rows().get(site)
        if rows is not None and rows < bound:
            bound, why = rows, "its row count in round 0"
        return bound, why

    def check(self, site: str, claimed: int, what: str, round: int) -> None:
        """Refuse a claim of more samples than the site can show."""
        bound, why = self.bound(site)
        if claimed > bound:
            raise InvalidUpdate(
                f"{what} claims {claimed} samples; site {site!r} may claim at most {bound} ({why})",
                site=site,
                round=round,
            )
