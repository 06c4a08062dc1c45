"""Which sites leave a secure round over shares that did not open.

A site that cannot open a peer's sealed share leaves that pair's mask out of its own and names
the peer with its masked update. Either the peer sealed something wrong or the site lies (or
the aggregator altered the envelope, which gains it nothing: it can drop any site anyway). Both
cannot stay in the sum, since their pair's masks would not cancel, so for every dispute between
two survivors one of them leaves. The fewest sites that settle every dispute is a vertex cover
of the dispute graph; each dispute has at least one dishonest side, so honest sites lose at
most as many places as there are dishonest sites. Picked greedily: a site in most disputes
first (one that names every other site leaves alone); on a tie the site named leaves, as the
sender of the share that did not open, then by name so every run agrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def disputes_among(
    survivors: Iterable[str], unopened: Mapping[str, Iterable[str]]
) -> set[tuple[str, str]]:
    """(site, peer) for every survivor that could not open a surviving peer's share."""
    alive = set(survivors)
    return {
        (site, peer)
        for site, peers in unopened.items()
        if site in alive
        for peer in peers
        if peer in alive and peer != site
    }


def sites_to_leave(disputes: Iterable[tuple[str, str]]) -> list[str]:
    """The sites to take out of the round so that no dispute is left between survivors."""
    left = set(disputes)
    out: list[str] = []
    while left:
        degree: dict[str, int] = {}
        named: dict[str, int] = {}
        for site, peer in left:
            degree[site] = degree.get(site, 0) + 1
            degree[peer] = degree.get(peer, 0) + 1
            named[peer] = named.get(peer, 0) + 1
        leaving = min(degree, key=lambda s: (-degree[s], -named.get(s, 0), s))
        out.append(leaving)
        left = {(a, b) for a, b in left if leaving not in (a, b)}
    return sorted(out)
