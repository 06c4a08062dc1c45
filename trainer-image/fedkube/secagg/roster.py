"""The roster of a secure round, as each site checks it: well formed, within what this
site's own manifest allows, and the weights it gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedkube.errors import SecureAggregationError
from fedkube.proto import fedkube_pb2 as pb
from fedkube.spec.sites import MAX_SAMPLES


def check_roster(roster: Sequence[pb.SiteKeys], threshold: int) -> dict[str, pb.SiteKeys]:
    by_name = {s.site: s for s in roster}
    indices = sorted(s.index for s in roster)
    if len(by_name) != len(roster) or indices != list(range(1, len(roster) + 1)):
        raise SecureAggregationError("the roster repeats a site or skips an index")
    if len(roster) < threshold:
        raise SecureAggregationError(
            f"the roster has {len(roster)} sites, fewer than the threshold {threshold}"
        )
    return by_name


def site_weights(roster: Sequence[pb.SiteKeys], params: pb.SecAggParams) -> dict[str, float]:
    """Each site's weight, folded into its values before masking; they sum to 1 over the
    roster, so any subset's fixed-point sum stays in range."""
    if params.equal_weights:
        # DP's fixed denominator (the job's sites), never the roster the aggregator chose.
        share = 1.0 / max(params.num_sites, len(roster))
        return {s.site: share for s in roster}
    total = sum(s.num_samples for s in roster)
    return {s.site: s.num_samples / total for s in roster}


def manifest_problem(
    roster: Sequence[pb.SiteKeys], listed: Mapping[str, int | None] | None, equal_weights: bool
) -> str | None:
    """Why this site's own manifest (its sites, and the most samples each may claim:
    sites[].maxSamples) refuses the roster; None when it allows it."""
    strangers = sorted({e.site for e in roster} - set(listed)) if listed is not None else []
    if strangers:
        return (
            f"the roster names {', '.join(strangers)}, which this site's manifest does not "
            "list: not answered"
        )
    if equal_weights:
        return None
    # A site's advertised samples are its weight in every site's sum.
    over = [
        f"{e.site} {e.num_samples} (at most {bound})"
        for e in roster
        if e.num_samples > (bound := min((listed or {}).get(e.site) or MAX_SAMPLES, MAX_SAMPLES))
    ]
    if over:
        return (
            f"the roster gives more samples than this site's manifest allows "
            f"(sites[].maxSamples): {', '.join(over)}; not answered"
        )
    return None
